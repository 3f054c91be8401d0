use std::{collections::HashMap, sync::Arc};

use super::*;
use crate::config::{parse_yaml, reload, Overrides};

/// Every secret the file and the environment below carry.
const SECRETS: &[&str] = &[
    "upstr3am-pw",
    "c0llector-pw",
    "file-k3y",
    "file-t0ken",
    "app-t0ken",
    "prod-v4lue",
    "env-s3cr3t-token",
    "env-k3y",
    "env-traces-k3y",
    "env-endpoint-pw",
    "flag-pw",
];

const FILE: &str = r#"
inbound:
  upstream: http://svc:upstr3am-pw@127.0.0.1:8080
  tls: { cert: /etc/tls/tls.crt, key: /etc/tls/tls.key }
admin: { expose: [config] }
tracing:
  export:
    endpoint: http://otel:c0llector-pw@collector:4318
    headers: { x-api-key: file-k3y, authorization: "Bearer file-t0ken" }
  capture: { request_headers: [authorization, x-tenant], redact: [x-tenant] }
filters:
  - headers: { request_add: { authorization: "Bearer app-t0ken", x-env: prod-v4lue } }
"#;

fn env() -> HashMap<String, String> {
    [
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer env-s3cr3t-token,x-api-key=env-k3y",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "x-honeycomb-team=env-traces-k3y",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://u:env-endpoint-pw@collector:4318",
        ),
        ("OTEL_SERVICE_NAME", "checkout"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn settings(file: &str, overrides: Overrides) -> Settings {
    Settings::resolve(overrides, parse_yaml(file).unwrap(), None, &env()).unwrap()
}

fn assert_clean(json: &str) {
    for secret in SECRETS {
        assert!(!json.contains(secret), "{secret} leaked into\n{json}");
    }
}

#[test]
fn no_secret_from_the_file_or_the_environment_is_rendered() {
    let s = settings(FILE, Overrides::default());
    let json = String::from_utf8(render(&s).to_vec()).unwrap();
    assert_clean(&json);
    let v: Value = serde_json::from_str(&json).unwrap();
    let export = &v["tracing"]["export"];
    assert_eq!(
        export["headers"]["x-api-key"], REDACTED,
        "names stay, values go"
    );
    assert_eq!(export["headers"]["authorization"], REDACTED);
    assert_eq!(export["endpoint"], "http://[REDACTED]@collector:4318");
    assert_eq!(v["upstream"], "http://[REDACTED]@127.0.0.1:8080");
    let add = &v["filters"][0]["headers"]["request_add"];
    assert_eq!(add["authorization"], REDACTED);
    assert_eq!(add["x-env"], REDACTED);
    assert_eq!(
        v["tls"]["key"], "/etc/tls/tls.key",
        "key paths stay visible"
    );
    assert_eq!(v["admin_expose"], serde_json::json!(["config"]));
    assert_eq!(v["service_name"], "checkout", "the environment applied");
    assert_eq!(v["tracing"]["capture"]["redact_builtin"], true);

    // The types redact on their own: any other rendering (check-config, a
    // future endpoint) is clean too.
    let plain = serde_json::to_string(&s).unwrap();
    assert_clean(&plain);
}

#[test]
fn a_secret_in_a_flag_is_not_rendered_either() {
    let s = settings(
        "{}",
        Overrides {
            upstream: Some("http://me:flag-pw@127.0.0.1:9".into()),
            ..Overrides::default()
        },
    );
    let json = String::from_utf8(render(&s).to_vec()).unwrap();
    assert_clean(&json);
    assert!(json.contains("127.0.0.1:9"), "{json}");
}

#[test]
fn keys_naming_a_credential_are_redacted_whatever_the_type() {
    let mut v = serde_json::json!({
        "bearer_token": "t0k",
        "client_secret": { "value": "s3c" },
        "api_key": "k3y",
        "password": ["p4ss"],
        "session_affinity": true,
        "max_tokens": 5,
        "key": "/etc/tls/tls.key",
        "nested": [{ "x_auth_token": "n3st" , "url": "http://a:b@h:1/p?q=1" }],
        "name": "token-bucket",
    });
    redact(&mut v);
    let text = v.to_string();
    for secret in ["t0k", "s3c", "k3y", "p4ss", "n3st", "a:b", "q=1"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    assert_eq!(
        v["session_affinity"], true,
        "flags and numbers say nothing secret"
    );
    assert_eq!(v["max_tokens"], 5);
    assert_eq!(v["key"], "/etc/tls/tls.key");
    assert_eq!(v["name"], "token-bucket", "values are judged by their key");
    assert_eq!(v["nested"][0]["url"], "http://[REDACTED]@h:1/p?[REDACTED]");
}

#[test]
fn a_reload_renders_again_with_the_same_redaction() {
    let dir = std::env::temp_dir().join(format!("sidetrace-config-view-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sidetrace.yaml");
    std::fs::write(&path, FILE).unwrap();
    let s = Settings::resolve(
        Overrides::default(),
        crate::config::load_file(&path).unwrap(),
        Some(path.clone()),
        &env(),
    )
    .unwrap();
    let view = Arc::new(ConfigView::new(&s));
    let recorder = metrics::NoopRecorder;
    let reloader = reload::Reloader::new(
        path.clone(),
        s,
        filters::route::Routes::default(),
        Vec::new(),
        reload::TraceReload {
            layers: Vec::new(),
            metrics: filters::trace::TraceMetrics::register(&recorder),
            env: env(),
        },
        metrics::Counter::noop(),
        metrics::Counter::noop(),
    )
    .rendering_to(view.clone());

    let reloaded = FILE
        .replace("file-t0ken", "rel0aded-t0ken")
        .replace("app-t0ken", "rel0aded-app")
        .replace("x-tenant]", "x-tenant, x-reloaded]");
    let generation =
        |json: &str| serde_json::from_str::<Value>(json).unwrap()["generation"].clone();
    let before = String::from_utf8(view.json().to_vec()).unwrap();
    assert_eq!(generation(&before), 1, "{before}");
    std::fs::write(
        &path,
        format!("{reloaded}routes:\n  - {{ prefix: /a, name: added }}\n"),
    )
    .unwrap();
    reloader.reload().unwrap();
    let json = String::from_utf8(view.json().to_vec()).unwrap();
    assert!(
        json.contains("x-reloaded"),
        "rendered again after the reload:\n{json}"
    );
    assert_eq!(generation(&json), 2, "{json}");
    assert!(json.contains("\"added\""), "routes reload too:\n{json}");
    let loaded_at = serde_json::from_str::<Value>(&json).unwrap()["loaded_at"].clone();
    assert!(
        loaded_at
            .as_str()
            .is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
        "{loaded_at}"
    );
    // A bad file changes nothing, the rendering included.
    std::fs::write(
        &path,
        format!("{reloaded}routes:\n  - {{ prefix: nope, name: bad }}\n"),
    )
    .unwrap();
    assert!(reloader.reload().is_err());
    assert_eq!(
        view.json(),
        json.as_bytes(),
        "a rejected reload keeps the view"
    );
    assert_clean(&json);
    for secret in ["rel0aded-t0ken", "rel0aded-app"] {
        assert!(
            !json.contains(secret),
            "{secret} leaked after the reload:\n{json}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
