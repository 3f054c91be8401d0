//! The OTLP/HTTP receiver: `POST /v1/traces`, protobuf, optionally gzip.

use std::{convert::Infallible, io::Read, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::{net::TcpListener, sync::oneshot};

use super::{Received, Shared};

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
    let answer = |status: StatusCode, body: &'static str| {
        let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = status;
        resp
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        shared.decode_error(format!("unexpected {} {}", req.method(), req.uri()));
        return answer(StatusCode::NOT_FOUND, "POST /v1/traces only\n");
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
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            shared.decode_error(format!("protobuf: {e}"));
            return answer(StatusCode::BAD_REQUEST, "bad protobuf\n");
        }
    };
    let received = Received {
        request,
        gzip,
        headers: parts.headers,
    };
    if shared.answer(received).await {
        let mut resp = Response::new(Full::new(
            ExportTraceServiceResponse::default().encode_to_vec().into(),
        ));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        resp
    } else {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "the test collector is down\n",
        )
    }
}
