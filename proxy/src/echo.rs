//! `sidetrace echo`: a test upstream speaking HTTP/1.1, h2c and gRPC on one
//! port. Used by the tests, the demo and the load harness.
//!
//! HTTP: the response echoes the request body, shaped by query parameters:
//! `status=503`, `delay_ms=250`, `size=1024` (a body of that many bytes),
//! `chunks=5` (a streamed body in that many chunks, `delay_ms` apart),
//! `trailers=1` (adds `x-echo-trailer: done` trailers). `GET /headers`
//! answers with the request's method, path, version and headers as JSON.
//!
//! gRPC (`/sidetrace.echo.v1.Echo/Unary`, `/sidetrace.echo.v1.Echo/ServerStream`):
//! messages are echoed as they came, with no schema; metadata
//! `x-echo-grpc-status`, `x-echo-grpc-message`, `x-echo-delay-ms` and
//! `x-echo-count` (stream length) shape the reply.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;

use filters::HttpBody;

/// gRPC unary echo method.
pub const GRPC_UNARY: &str = "/sidetrace.echo.v1.Echo/Unary";
/// gRPC server-streaming echo method.
pub const GRPC_STREAM: &str = "/sidetrace.echo.v1.Echo/ServerStream";

/// Serves the echo app on `listener` until `stop` resolves.
pub async fn serve(listener: TcpListener, stop: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(4096);
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(handle);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `addr` and serves forever.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "echo app listening (HTTP/1.1, h2c, gRPC)");
    serve(listener, std::future::pending()).await;
    Ok(())
}

async fn handle(req: Request<Incoming>) -> Result<Response<HttpBody>, Infallible> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return Ok(grpc(req).await);
    }
    Ok(http(req).await)
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn http(req: Request<Incoming>) -> Response<HttpBody> {
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| query_param(&query, name).and_then(|v| v.parse::<u64>().ok());
    let status = param("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let delay = Duration::from_millis(param("delay_ms").unwrap_or(0));
    let chunks = param("chunks").unwrap_or(0);
    let trailers = param("trailers").unwrap_or(0) == 1;
    if chunks == 0 && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if req.uri().path() == "/headers" {
        let mut map = serde_json::Map::new();
        for (name, value) in req.headers() {
            let entry = map
                .entry(name.as_str().to_string())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(values) = entry {
                values.push(
                    String::from_utf8_lossy(value.as_bytes())
                        .into_owned()
                        .into(),
                );
            }
        }
        let doc = serde_json::json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "version": format!("{:?}", req.version()),
            "headers": map,
        });
        let mut resp = Response::new(filters::full_body(doc.to_string()));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    let body: HttpBody = if let Some(size) = param("size") {
        filters::full_body(Bytes::from(vec![
            b'x';
            usize::try_from(size.min(64 << 20))
                .unwrap_or(0)
        ]))
    } else if chunks > 0 || trailers {
        let n = chunks.max(1);
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i > n {
                return None;
            }
            if i == n {
                if !trailers {
                    return None;
                }
                let mut t = HeaderMap::new();
                t.insert("x-echo-trailer", HeaderValue::from_static("done"));
                return Some((Ok::<_, filters::Error>(Frame::trailers(t)), i + 1));
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(Frame::data(Bytes::from(format!("chunk {i}\n")))), i + 1))
        });
        StreamBody::new(stream).boxed_unsync()
    } else {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let mut resp = Response::new(if bytes.is_empty() {
            filters::full_body("ok\n")
        } else {
            filters::full_body(bytes)
        });
        *resp.status_mut() = status;
        if let Some(ct) = content_type {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return resp;
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if trailers {
        // HTTP/1.1 sends trailers only when the response announces them
        // (and the client asked with `TE: trailers`); HTTP/2 always can.
        resp.headers_mut()
            .insert(header::TRAILER, HeaderValue::from_static("x-echo-trailer"));
    }
    resp
}

async fn grpc(req: Request<Incoming>) -> Response<HttpBody> {
    let meta = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = meta("x-echo-grpc-status")
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(0);
    let message = meta("x-echo-grpc-message");
    let delay = Duration::from_millis(
        meta("x-echo-delay-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let count = meta("x-echo-count")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(3);
    let path = req.uri().path().to_string();
    let mut trailers = HeaderMap::new();
    let known = path == GRPC_UNARY || path == GRPC_STREAM;
    let status = if known { status } else { 12 };
    trailers.insert("grpc-status", HeaderValue::from(status));
    if let Some(m) = message
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        trailers.insert("grpc-message", m);
    } else if !known {
        trailers.insert("grpc-message", HeaderValue::from_static("unknown method"));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let messages: Vec<Bytes> = if !known || status != 0 {
        Vec::new()
    } else {
        let payload = grpc_messages(&body);
        if path == GRPC_STREAM {
            payload
                .iter()
                .cycle()
                .take(count * payload.len().max(1))
                .cloned()
                .collect()
        } else {
            payload
        }
    };
    let mut frames: Vec<Result<Frame<Bytes>, filters::Error>> = messages
        .into_iter()
        .map(|m| {
            let mut framed = BytesMut::with_capacity(m.len() + 5);
            framed.put_u8(0);
            framed.put_u32(u32::try_from(m.len()).unwrap_or(u32::MAX));
            framed.put_slice(&m);
            Ok(Frame::data(framed.freeze()))
        })
        .collect();
    frames.push(Ok(Frame::trailers(trailers)));
    let mut resp =
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// Splits a gRPC request body into its length-prefixed messages.
fn grpc_messages(mut body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(msg) = body.get(5..5 + len) else {
            break;
        };
        out.push(Bytes::copy_from_slice(msg));
        body = &body[5 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_frames() {
        let body = [0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0, 0];
        assert_eq!(
            grpc_messages(&body),
            vec![Bytes::from_static(b"hi"), Bytes::new()]
        );
        assert!(
            grpc_messages(&[0, 0, 0, 0, 9, 1]).is_empty(),
            "truncated frames are dropped"
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("a=1&status=503", "status"), Some("503"));
        assert_eq!(query_param("", "status"), None);
    }
}
