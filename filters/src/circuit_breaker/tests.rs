use std::{
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::StatusCode;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::*;
use crate::classify::{classify_error, CircuitOpen, RateLimited, UpstreamError, UpstreamErrorKind};

/// What the scripted upstream answers: a status, or 0 for a connect error,
/// or 1 for a local rate-limit error.
#[derive(Clone, Default)]
struct Script {
    answer: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
    delay: Arc<AtomicUsize>,
}

impl Script {
    fn answer(&self, code: u16) {
        self.answer.store(code, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<(), Response = http::Response<()>, Error = crate::Error, Future = impl Send> + Clone
    {
        let s = self.clone();
        service_fn(move |()| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                let delay = s.delay.load(Ordering::SeqCst) as u64;
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                match s.answer.load(Ordering::SeqCst) {
                    0 => Err(UpstreamError {
                        kind: UpstreamErrorKind::Connect,
                        addr: http::uri::Authority::from_static("app:80"),
                        source: "refused".into(),
                    }
                    .into()),
                    1 => Err(RateLimited { per_second: 1 }.into()),
                    code => {
                        let mut res = http::Response::new(());
                        *res.status_mut() = StatusCode::from_u16(code).unwrap();
                        Ok(res)
                    }
                }
            }
        })
    }
}

fn config(failure_ratio: f64, min_requests: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_ratio,
        min_requests,
        open_for: Duration::from_secs(10),
        window: Duration::from_secs(10),
    }
}

async fn send<S>(svc: &S, n: usize) -> Vec<Result<StatusCode, crate::Error>>
where
    S: Service<(), Response = http::Response<()>, Error = crate::Error> + Clone,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(svc.clone().oneshot(()).await.map(|r| r.status()));
    }
    out
}

fn is_open(r: &Result<StatusCode, crate::Error>) -> bool {
    matches!(r, Err(e) if e.is::<CircuitOpen>())
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_ratio_and_stops_calling_upstream() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(0.5, 4)).layer(script.service());

    script.answer(200);
    send(&svc, 2).await;
    script.answer(503);
    let out = send(&svc, 2).await;
    assert!(out.iter().all(|r| matches!(r, Ok(s) if *s == 503)));
    // 2 failures of 4 requests: 0.5 reached with min_requests met.
    assert!(!svc.is_closed());
    assert_eq!(script.calls(), 4);

    script.answer(200);
    let out = send(&svc, 3).await;
    assert!(out.iter().all(is_open), "open answers without the upstream");
    assert_eq!(script.calls(), 4);
    let err = out.into_iter().next().unwrap().unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after, Duration::from_secs(10));
    assert_eq!(
        classify_error(&*err).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn needs_min_requests() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(0.5, 10)).layer(script.service());
    script.answer(0);
    let out = send(&svc, 9).await;
    assert!(out
        .iter()
        .all(|r| matches!(r, Err(e) if e.is::<UpstreamError>())));
    assert!(svc.is_closed());
    send(&svc, 1).await;
    assert!(!svc.is_closed());
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_local_limits_are_not_failures() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(0.1, 2)).layer(script.service());
    script.answer(404);
    send(&svc, 10).await;
    script.answer(1);
    send(&svc, 10).await;
    assert!(svc.is_closed());
    script.answer(500);
    send(&svc, 2).await;
    assert!(!svc.is_closed(), "INTERNAL counts");
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(0.5, 4)).layer(script.service());
    script.answer(502);
    send(&svc, 3).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    script.answer(200);
    send(&svc, 1).await;
    script.answer(502);
    send(&svc, 2).await;
    // 2 failures of 3 in the window: below min_requests.
    assert!(svc.is_closed());
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(0.5, 2)).layer(script.service());
    script.answer(504);
    send(&svc, 2).await;
    assert!(is_open(&send(&svc, 1).await[0]));

    // After open_for, a failed probe opens the breaker again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let out = send(&svc, 2).await;
    assert!(
        matches!(out[0], Ok(s) if s == 504),
        "the probe reaches upstream"
    );
    assert!(is_open(&out[1]));
    assert_eq!(script.calls(), 3);

    // A slow successful probe: others are turned away while it runs.
    tokio::time::advance(Duration::from_secs(10)).await;
    script.answer(200);
    script.delay.store(100, Ordering::SeqCst);
    let probe = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert!(is_open(&send(&svc, 1).await[0]));
    assert_eq!(probe.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(svc.is_closed());

    // Closing forgets the old failures: one new failure does not reopen.
    script.delay.store(0, Ordering::SeqCst);
    script.answer(503);
    send(&svc, 1).await;
    assert!(svc.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_the_slot() {
    let script = Script::default();
    let svc = CircuitBreakerLayer::new(&config(1.0, 1)).layer(script.service());
    script.answer(0);
    send(&svc, 1).await;
    tokio::time::advance(Duration::from_secs(10)).await;

    script.answer(200);
    script.delay.store(1_000, Ordering::SeqCst);
    let probe = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    probe.abort();
    let _ = probe.await;

    script.delay.store(0, Ordering::SeqCst);
    let out = send(&svc, 1).await;
    assert!(
        matches!(out[0], Ok(s) if s == 200),
        "the next request probes"
    );
    assert!(svc.is_closed());
}

#[test]
fn validation_names_the_field() {
    let cases = [
        ("{ failure_ratio: 0 }", "failure_ratio"),
        ("{ failure_ratio: 1.5 }", "failure_ratio"),
        ("{ min_requests: 0 }", "min_requests"),
        ("{ open_for: 0s }", "open_for"),
        ("{ open_for: 2days }", "open_for"),
        ("{ window: 1ms }", "window"),
    ];
    for (yaml, field) in cases {
        let c: CircuitBreakerConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(
            crate::registry::Filter::validate(&c).unwrap_err().field,
            field
        );
    }
    let c: CircuitBreakerConfig = serde_saphyr::from_str("{}").unwrap();
    assert_eq!(c.failure_ratio, 0.5);
    assert_eq!(c.min_requests, 20);
    assert_eq!(c.open_for, Duration::from_secs(10));
    assert_eq!(c.window, Duration::from_secs(10));
}
