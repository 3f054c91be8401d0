//! A proxy under test, on its own runtime thread.

use std::{collections::HashMap, net::SocketAddr, thread, time::Duration};

use sidetrace::{
    app,
    config::{parse_yaml, Overrides, Settings},
    drain::DrainTrigger,
};
use tokio::sync::oneshot;

/// Builds a proxy.
#[derive(Default)]
pub struct ProxyBuilder {
    yaml: String,
    upstream: Option<String>,
    outbound: bool,
    env: HashMap<String, String>,
    file: Option<std::path::PathBuf>,
    extensions: app::Extensions,
}

/// A running proxy.
pub struct Proxy {
    /// Inbound address.
    pub inbound: SocketAddr,
    /// Outbound address, when enabled.
    pub outbound: Option<SocketAddr>,
    /// Admin address.
    pub admin: SocketAddr,
    trigger: DrainTrigger,
    thread: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// A builder from YAML config text.
    pub fn from_yaml(yaml: &str) -> ProxyBuilder {
        ProxyBuilder {
            yaml: yaml.to_string(),
            ..ProxyBuilder::default()
        }
    }

    /// A builder with no config file.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// `http://inbound`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.inbound)
    }

    /// `http://admin`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Starts the drain, as SIGTERM does.
    pub fn drain(&self) {
        self.trigger.drain();
    }

    /// What SIGTERM does: `/ready` answers 503 at once, the listeners keep
    /// accepting for `delay` (the config's `drain_delay`), then the drain
    /// starts. Runs on the caller's runtime.
    pub fn sigterm(&self, delay: Duration) {
        let trigger = self.trigger.clone();
        tokio::spawn(async move {
            trigger
                .drain_after(delay, std::future::pending::<()>())
                .await;
        });
    }

    /// Drains and waits for the proxy thread to end, re-raising its panics.
    pub fn shutdown(mut self) {
        self.trigger.drain();
        if let Some(t) = self.thread.take() {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }

    /// Waits for the proxy thread to end (after a drain started elsewhere).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.trigger.drain();
    }
}

impl ProxyBuilder {
    /// Forwards to `url`.
    pub fn upstream(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// Writes the YAML to `path` and runs from that file, so reloads can be tested.
    pub fn config_file(mut self, path: &std::path::Path) -> Self {
        std::fs::write(path, &self.yaml).unwrap();
        self.file = Some(path.to_path_buf());
        self
    }

    /// Enables the outbound listener on a free port.
    pub fn outbound(mut self) -> Self {
        self.outbound = true;
        self
    }

    /// Adds an environment variable the proxy sees.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds an OpenTelemetry propagator, as a program embedding the proxy
    /// would.
    pub fn propagator(mut self, p: filters::trace::propagation::custom::DynPropagator) -> Self {
        self.extensions.propagators.push(p);
        self
    }

    /// Starts the proxy on its own thread and runtime.
    pub async fn run(self) -> Proxy {
        let file = parse_yaml(&self.yaml).expect("test config parses");
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let overrides = Overrides {
            inbound: Some(local),
            admin: Some(local),
            outbound: self.outbound.then_some(local),
            upstream: self.upstream,
            ..Overrides::default()
        };
        let settings =
            Settings::resolve(overrides, file, self.file, &self.env).expect("test settings");
        let (tx, rx) = oneshot::channel();
        let env = self.env;
        let extensions = self.extensions;
        let thread = thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let running = app::start_with(settings, &env, extensions)
                        .await
                        .expect("proxy starts");
                    let trigger = running.trigger();
                    let _ = tx.send((running.inbound, running.outbound, running.admin, trigger));
                    running.wait().await;
                });
            })
            .unwrap();
        let (inbound, outbound, admin, trigger) = tokio::time::timeout(crate::PATIENCE, rx)
            .await
            .expect("proxy started in time")
            .expect("proxy thread alive");
        Proxy {
            inbound,
            outbound,
            admin,
            trigger,
            thread: Some(thread),
        }
    }
}
