//! Upstreams: the real echo app, and small purpose-built servers.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::oneshot};

/// The gate of [`Upstream::gated`].
#[derive(Clone)]
pub struct Gate {
    arrived: Arc<tokio::sync::Semaphore>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    /// Waits, within [`crate::PATIENCE`], until `n` more requests have
    /// arrived at the app and are held there.
    pub async fn arrived(&self, n: u32) {
        tokio::time::timeout(crate::PATIENCE, self.arrived.acquire_many(n))
            .await
            .expect("the requests reached the app in time")
            .expect("the gate's semaphore is never closed")
            .forget();
    }

    /// Lets every held request (and every later one) answer.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A running upstream.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests it has received.
    pub requests: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The real `sidetrace echo` app (HTTP/1.1, h2c, gRPC).
    pub async fn echo() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(sidetrace::echo::serve(listener, async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            requests: Arc::default(),
            _stop: tx,
        }
    }

    /// An HTTP/1.1-only app (a legacy service) that counts requests and
    /// answers `legacy <method> <path> <body bytes>`.
    pub async fn http1_only() -> Self {
        Self::http1_app(|req: Request<Incoming>| async move {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Response::new(Full::new(Bytes::from(format!(
                "legacy {method} {path} {}",
                body.len()
            ))))
        })
        .await
    }

    /// An HTTP/1.1 app that accepts `Upgrade: websocket` and echoes the
    /// tunnelled bytes.
    pub async fn http1_upgrade_echo() -> Self {
        Self::http1_app(|mut req: Request<Incoming>| async move {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("websocket"));
            resp.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
            resp
        })
        .await
    }

    /// An HTTP/1.1 app that answers every request after `delay`; the second
    /// value is the most requests it has held at once.
    pub async fn slow_tracking_concurrency(delay: std::time::Duration) -> (Self, Arc<AtomicUsize>) {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let seen = most.clone();
        let up = Self::http1_app(move |_req: Request<Incoming>| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        })
        .await;
        (up, seen)
    }

    /// An HTTP/1.1-only server answering with `handle`, counting requests.
    pub async fn http1_app<F, Fut>(handle: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = oneshot::channel::<()>();
        let count = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                };
                let count = count.clone();
                let handle = handle.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let response = handle(req);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            _stop: tx,
        }
    }

    /// An address where nothing listens (connections are refused), kept so
    /// for the whole run: see [`kit::refusing_addr`].
    pub async fn dead() -> SocketAddr {
        kit::refusing_addr()
    }

    /// An app (HTTP/1.1 and h2c) that holds every request to `/held` until
    /// the test opens the [`Gate`], then answers `ok`: a test knows those
    /// requests are in flight from [`Gate::arrived`], not from a sleep. Other
    /// paths are load: answered after `delay_ms` with `size` bytes, as the
    /// echo app's `/slow?delay_ms=..&size=..` is.
    pub async fn gated() -> (Self, Gate) {
        let gate = Gate {
            arrived: Arc::new(tokio::sync::Semaphore::new(0)),
            open: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = oneshot::channel::<()>();
        let (count, held) = (requests.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                };
                let (count, held) = (count.clone(), held.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let held = held.clone();
                        async move {
                            if req.uri().path() != "/held" {
                                return Ok::<_, Infallible>(Response::new(load(req.uri()).await));
                            }
                            let mut open = held.open.subscribe();
                            held.arrived.add_permits(1);
                            let _ = open.wait_for(|open| *open).await;
                            Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let up = Self {
            addr,
            requests,
            _stop: tx,
        };
        (up, gate)
    }
}

/// A load request's answer: `size` bytes after `delay_ms`, from the query.
async fn load(uri: &http::Uri) -> Full<Bytes> {
    let param = |name: &str| -> u64 {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::sleep(std::time::Duration::from_millis(param("delay_ms"))).await;
    Full::new(Bytes::from(vec![b'x'; param("size") as usize]))
}
