//! The OTLP/HTTP receiver: `POST /v1/traces`, `/v1/logs` and
//! `/v1/metrics`, protobuf, optionally gzip.

use std::{convert::Infallible, io::Read, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use tokio::{net::TcpListener, sync::oneshot};

use super::{
    signal::{Export, Signal},
    Shared,
};

pub(super) async fn serve_http(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle_http(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

pub(super) async fn handle_http(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != http::Method::POST
        || !matches!(path, "/v1/traces" | "/v1/logs" | "/v1/metrics")
    {
        shared.decode_error(format!("unexpected {} {}", req.method(), req.uri()));
        return answer(
            StatusCode::NOT_FOUND,
            "POST /v1/traces, /v1/logs or /v1/metrics only\n",
        );
    }
    let (parts, body) = req.into_parts();
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    if content_type.is_none_or(|v| v.as_bytes() != b"application/x-protobuf") {
        shared.decode_error(format!("content-type {content_type:?}"));
        return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, "protobuf only\n");
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            shared.decode_error(format!("body: {e}"));
            return answer(StatusCode::BAD_REQUEST, "body\n");
        }
    };
    let gzip = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = if gzip {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            shared.decode_error(format!("gzip: {e}"));
            return answer(StatusCode::BAD_REQUEST, "bad gzip\n");
        }
        Bytes::from(out)
    } else {
        body
    };
    match parts.uri.path() {
        "/v1/logs" => take::<ExportLogsServiceRequest>(shared, body, gzip, parts.headers).await,
        "/v1/metrics" => {
            take::<ExportMetricsServiceRequest>(shared, body, gzip, parts.headers).await
        }
        _ => take::<ExportTraceServiceRequest>(shared, body, gzip, parts.headers).await,
    }
}

/// Decodes one export of signal `R` and answers it as the mode says.
async fn take<R: Signal>(
    shared: &Shared,
    body: Bytes,
    gzip: bool,
    headers: HeaderMap,
) -> Response<Full<Bytes>> {
    let request = match R::decode(body) {
        Ok(r) => r,
        Err(e) => {
            shared.decode_error(format!("{}protobuf: {e}", R::NAME));
            return answer(StatusCode::BAD_REQUEST, "bad protobuf\n");
        }
    };
    let export = Export {
        request,
        gzip,
        headers,
    };
    if shared.take(export).await {
        protobuf(R::Response::default().encode_to_vec())
    } else {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "the test collector is down\n",
        )
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

fn protobuf(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}
