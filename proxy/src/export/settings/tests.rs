//! Settings resolution: endpoints, headers, timeouts, compression, retry
//! backoff, and the TLS files with their precedence and errors.

use super::*;
use crate::export::TlsFile;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn endpoint_table() {
    let http = ExportProtocol::HttpProtobuf;
    let grpc = ExportProtocol::Grpc;
    // (file endpoint, file protocol, env, target, protocol)
    type Row<'a> = (
        Option<&'a str>,
        ExportProtocol,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        ExportProtocol,
    );
    let table: Vec<Row<'_>> = vec![
        (None, http, vec![], None, http),
        (
            Some("http://collector:4318"),
            http,
            vec![],
            Some("http://collector:4318/v1/traces"),
            http,
        ),
        (
            Some("http://collector:4318/base/"),
            http,
            vec![],
            Some("http://collector:4318/base/v1/traces"),
            http,
        ),
        (
            Some("http://otel-collector:4317"),
            grpc,
            vec![],
            Some("http://otel-collector:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
            grpc,
        ),
        (
            Some("http://file:4318"),
            http,
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")],
            Some("http://env:4318/v1/traces"),
            http,
        ),
        (
            None,
            http,
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom/path"),
            ],
            Some("http://traces:9999/custom/path"),
            http,
        ),
        (
            None,
            http,
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            Some("http://env:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
            grpc,
        ),
        (
            Some("http://file:4318"),
            http,
            vec![("OTEL_TRACES_EXPORTER", "none")],
            None,
            http,
        ),
    ];
    for (i, (endpoint, protocol, vars, want, want_protocol)) in table.into_iter().enumerate() {
        let cfg = ExportConfig {
            endpoint: endpoint.map(String::from),
            protocol,
            ..ExportConfig::default()
        };
        let s = ExportSettings::resolve(&cfg, &env(&vars)).unwrap();
        assert_eq!(s.target.map(|u| u.to_string()).as_deref(), want, "row {i}");
        assert_eq!(s.protocol, want_protocol, "row {i}");
    }
}

#[test]
fn headers_timeout_compression_and_errors() {
    let mut cfg = ExportConfig::default();
    cfg.headers.insert("X-Api-Key".into(), "file".into());
    cfg.headers.insert("x-team".into(), "core".into());
    let s = ExportSettings::resolve(
        &cfg,
        &env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=env%20key, x-extra=1",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]),
    )
    .unwrap();
    assert_eq!(s.headers["x-api-key"], "env key");
    assert_eq!(s.headers["x-team"], "core");
    assert_eq!(s.headers["x-extra"], "1");
    assert_eq!(s.timeout, Duration::from_millis(2500));
    assert!(s.gzip);
    let bad: &[(&str, &str, &str)] = &[
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "ftp://x:4318",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4318",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "novalue",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "soon",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        (
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "zstd",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
    ];
    for (k, v, source) in bad {
        let e = ExportSettings::resolve(&ExportConfig::default(), &env(&[(k, v)])).unwrap_err();
        assert_eq!(e.source_name, *source, "{k}={v}");
    }
}

fn tls_file(path: &str, source_name: &'static str) -> Option<TlsFile> {
    Some(TlsFile {
        path: path.into(),
        source_name,
    })
}

#[test]
fn https_endpoints_keep_their_scheme() {
    for (protocol, want) in [
        (
            ExportProtocol::HttpProtobuf,
            "https://collector:4318/v1/traces",
        ),
        (
            ExportProtocol::Grpc,
            "https://collector:4318/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
    ] {
        let cfg = ExportConfig {
            protocol,
            ..ExportConfig::default()
        };
        let vars = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")]);
        let s = ExportSettings::resolve(&cfg, &vars).unwrap();
        assert_eq!(s.target.unwrap().to_string(), want);
        assert_eq!(s.tls, ExportTls::default(), "system roots only");
    }
}

#[test]
fn tls_files_env_over_file_traces_over_generic() {
    let cfg = ExportConfig {
        endpoint: Some("https://collector:4317".into()),
        tls: Some(filters::trace::config::ExportTlsConfig {
            ca: Some("/file/ca.pem".into()),
            cert: Some("/file/cert.pem".into()),
            key: Some("/file/key.pem".into()),
        }),
        ..ExportConfig::default()
    };
    let s = ExportSettings::resolve(&cfg, &env(&[])).unwrap();
    assert_eq!(s.tls.ca, tls_file("/file/ca.pem", "tracing.export.tls.ca"));
    assert_eq!(
        s.tls.cert,
        tls_file("/file/cert.pem", "tracing.export.tls.cert")
    );
    assert_eq!(
        s.tls.key,
        tls_file("/file/key.pem", "tracing.export.tls.key")
    );

    // Each file on its own: the generic variables beat the file, the
    // _TRACES_ ones beat the generic ones, blank values count as unset.
    let s = ExportSettings::resolve(
        &cfg,
        &env(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/env/cert.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", " "),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/traces/key.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.tls.ca,
        tls_file("/traces/ca.pem", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
    );
    assert_eq!(
        s.tls.cert,
        tls_file("/env/cert.pem", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
    );
    assert_eq!(
        s.tls.key,
        tls_file("/traces/key.pem", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY")
    );

    // Environment only, with the endpoint from the environment too.
    let s = ExportSettings::resolve(
        &ExportConfig::default(),
        &env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.tls.ca,
        tls_file("/env/ca.pem", "OTEL_EXPORTER_OTLP_CERTIFICATE")
    );
    assert_eq!((s.tls.cert, s.tls.key), (None, None));
}

#[test]
fn tls_errors_name_the_setting() {
    let file = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| ExportConfig {
        endpoint: Some("https://collector:4317".into()),
        tls: Some(filters::trace::config::ExportTlsConfig {
            ca: ca.map(Into::into),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
        }),
        ..ExportConfig::default()
    };
    let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318");
    // (config, env, the setting named, a word of the message)
    type Row<'a> = (ExportConfig, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let table: Vec<Row<'_>> = vec![
        (
            file(None, Some("/c.pem"), None),
            vec![],
            "tracing.export.tls.cert",
            "needs its key",
        ),
        (
            file(None, None, Some("/k.pem")),
            vec![],
            "tracing.export.tls.key",
            "needs its certificate",
        ),
        (
            ExportConfig::default(),
            vec![https, ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem")],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "needs its key",
        ),
        (
            ExportConfig::default(),
            vec![https, ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem")],
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "needs its certificate",
        ),
        (
            ExportConfig {
                endpoint: Some("http://collector:4317".into()),
                ..file(Some("/ca.pem"), None, None)
            },
            vec![],
            "tracing.export.tls.ca",
            "http://collector:4317 is not one",
        ),
        (
            ExportConfig::default(),
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
            ],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ),
        (
            ExportConfig::default(),
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "no collector endpoint",
        ),
    ];
    for (i, (cfg, vars, source, words)) in table.into_iter().enumerate() {
        let e = ExportSettings::resolve(&cfg, &env(&vars)).unwrap_err();
        assert_eq!(e.source_name, source, "row {i}: {e}");
        assert!(e.message.contains(words), "row {i}: {e}");
    }
    // Export switched off: the TLS settings are not an error.
    let off = env(&[
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
    ]);
    let s = ExportSettings::resolve(&ExportConfig::default(), &off).unwrap();
    assert!(s.target.is_none());
    assert!(s.client_tls().unwrap().is_none());
}

#[test]
fn unreadable_tls_files_name_the_variable_or_field() {
    let dir = std::env::temp_dir().join(format!("sidetrace-export-tls-{}", std::process::id()));
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let https = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4318");
    let from_env = env(&[https, ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", missing)]);
    let s = ExportSettings::resolve(&ExportConfig::default(), &from_env).unwrap();
    let e = s.client_tls().unwrap_err();
    assert_eq!(
        e.source_name, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "{e}"
    );
    assert!(e.message.contains("missing.pem"), "{e}");

    let cfg = ExportConfig {
        tls: Some(filters::trace::config::ExportTlsConfig {
            cert: Some(missing.into()),
            key: Some(missing.into()),
            ..Default::default()
        }),
        ..ExportConfig::default()
    };
    let s = ExportSettings::resolve(&cfg, &env(&[https])).unwrap();
    let e = s.client_tls().unwrap_err();
    assert_eq!(e.source_name, "tracing.export.tls.cert", "{e}");
}

#[test]
fn backoff_doubles_and_caps() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
    assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
    assert_eq!(p.backoff(4, 0.0), Duration::from_millis(800));
    assert_eq!(p.backoff(30, 0.0), Duration::from_secs(5));
    assert_eq!(p.backoff(1, 1.0), Duration::from_millis(50));
}
