use std::{collections::HashMap, time::Duration};

use super::*;

fn yaml(text: &str) -> Result<TracingConfig, String> {
    serde_saphyr::from_str::<TracingConfig>(text).map_err(|e| e.to_string())
}

#[test]
fn design_example_parses() {
    let cfg = yaml(
        r#"
sampler: { type: parent_ratio, ratio: 0.1, max_per_second: 100 }
propagators: [tracecontext, baggage, b3, legacy]
export: { endpoint: "http://otel-collector:4317", protocol: grpc, batch_size: 512, queue_size: 8192 }
capture: { request_headers: [x-tenant], response_headers: [], redact: [authorization, cookie] }
"#,
    )
    .unwrap();
    assert_eq!(cfg.sampler.kind, SamplerKind::ParentRatio);
    assert_eq!(cfg.sampler.ratio, 0.1);
    assert_eq!(cfg.sampler.max_per_second, Some(100));
    assert_eq!(cfg.export.protocol, ExportProtocol::Grpc);
    assert_eq!(
        cfg.export.endpoint.as_deref(),
        Some("http://otel-collector:4317")
    );
    assert_eq!(cfg.capture.request_headers, vec!["x-tenant"]);
    assert!(cfg.access_log);
    cfg.validate().unwrap();
}

#[test]
fn defaults_and_unknown_keys() {
    let cfg = yaml("{}").unwrap();
    assert_eq!(cfg, TracingConfig::default());
    assert_eq!(cfg.propagators(), Propagators::default());
    assert_eq!(cfg.export.protocol, ExportProtocol::HttpProtobuf);
    assert!(yaml("samplr: {}").is_err());
    assert!(yaml("sampler: { type: sometimes }").is_err());
    assert!(yaml("export: { protocol: http }").is_err());
    let e = yaml("export: { protocol: http/protobuf, timeout: 250ms, gzip: true }").unwrap();
    assert_eq!(e.export.timeout, Duration::from_millis(250));
    assert!(e.export.gzip);
}

#[test]
fn validation_names_the_field() {
    let table: &[(&str, &str)] = &[
        ("sampler: { ratio: 1.5 }", "tracing.sampler.ratio"),
        (
            "sampler: { max_per_second: 0 }",
            "tracing.sampler.max_per_second",
        ),
        ("propagators: [b3, b3]", "tracing.propagators"),
        ("export: { endpoint: 'ftp://x' }", "tracing.export.endpoint"),
        (
            "export: { endpoint: 'not a url' }",
            "tracing.export.endpoint",
        ),
        ("export: { queue_size: 0 }", "tracing.export.queue_size"),
        (
            "export: { batch_size: 10000, queue_size: 100 }",
            "tracing.export.batch_size",
        ),
        ("export: { timeout: 0s }", "tracing.export.timeout"),
        (
            "export: { headers: { 'bad name': x } }",
            "tracing.export.headers",
        ),
        (
            "capture: { request_headers: ['a b'] }",
            "tracing.capture.request_headers",
        ),
        ("debug_panic_header: 'x y'", "tracing.debug_panic_header"),
        ("store_traces: 0", "tracing.store_traces"),
        ("store_bytes: 1000", "tracing.store_bytes"),
        ("store_bytes: 2000000000", "tracing.store_bytes"),
    ];
    for (text, field) in table {
        let cfg = yaml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(cfg.validate().unwrap_err().field, *field, "{text}");
    }
}

#[test]
fn routes_parse_and_validate() {
    let routes: Vec<RouteConfig> = serde_saphyr::from_str(
        r#"
- { prefix: /api/orders, name: orders, sample: always }
- { prefix: /healthz, name: health, sample: never }
- { prefix: /api, name: api, sample: 0.25 }
- { prefix: /one, name: one, sample: 1 }
- { prefix: /x, name: x }
"#,
    )
    .unwrap();
    assert_eq!(routes[0].sample, Some(RouteSample::Always));
    assert_eq!(routes[1].sample, Some(RouteSample::Never));
    assert_eq!(routes[2].sample, Some(RouteSample::Ratio(0.25)));
    assert_eq!(routes[3].sample, Some(RouteSample::Ratio(1.0)));
    assert_eq!(routes[4].sample, None);
    validate_routes(&routes).unwrap();
    assert!(
        serde_saphyr::from_str::<Vec<RouteConfig>>("- { prefix: /a, name: a, sample: 2 }").is_err()
    );
    assert!(
        serde_saphyr::from_str::<Vec<RouteConfig>>("- { prefix: /a, name: a, sample: often }")
            .is_err()
    );
    let bad = [RouteConfig {
        prefix: "api".into(),
        name: "a".into(),
        sample: None,
        ..RouteConfig::default()
    }];
    assert_eq!(validate_routes(&bad).unwrap_err().field, "routes.prefix");
    let bad = [RouteConfig {
        prefix: "/api".into(),
        name: String::new(),
        sample: None,
        ..RouteConfig::default()
    }];
    assert_eq!(validate_routes(&bad).unwrap_err().field, "routes.name");
}

#[test]
fn otel_sampler_env() {
    type Row<'a> = (&'a str, Option<&'a str>, Option<(SamplerKind, f64)>);
    let table: &[Row<'_>] = &[
        ("always_on", None, Some((SamplerKind::AlwaysOn, 1.0))),
        ("always_off", None, Some((SamplerKind::AlwaysOff, 0.0))),
        (
            "traceidratio",
            Some("0.25"),
            Some((SamplerKind::Ratio, 0.25)),
        ),
        ("traceidratio", None, Some((SamplerKind::Ratio, 1.0))),
        (
            "parentbased_always_on",
            None,
            Some((SamplerKind::ParentAlwaysOn, 1.0)),
        ),
        (
            "parentbased_always_off",
            None,
            Some((SamplerKind::ParentRatio, 0.0)),
        ),
        (
            "parentbased_traceidratio",
            Some("0.5"),
            Some((SamplerKind::ParentRatio, 0.5)),
        ),
        ("parentbased_traceidratio", Some("2"), None),
        ("parentbased_traceidratio", Some("x"), None),
        ("jaeger_remote", None, None),
    ];
    for (name, arg, want) in table {
        let mut env = HashMap::from([("OTEL_TRACES_SAMPLER".to_string(), name.to_string())]);
        if let Some(a) = arg {
            env.insert("OTEL_TRACES_SAMPLER_ARG".into(), a.to_string());
        }
        let mut cfg = TracingConfig::default();
        cfg.sampler.max_per_second = Some(7);
        let got = cfg
            .apply_env(&env)
            .map(|()| (cfg.sampler.kind, cfg.sampler.ratio));
        assert_eq!(got.ok(), *want, "{name} {arg:?}");
        if want.is_some() {
            assert_eq!(cfg.sampler.max_per_second, Some(7), "the cap carries over");
        }
    }
    let mut cfg = TracingConfig::default();
    let env = HashMap::from([("OTEL_PROPAGATORS".to_string(), "b3".to_string())]);
    cfg.apply_env(&env).unwrap();
    assert_eq!(cfg.propagators, vec![Propagator::B3]);
}

#[test]
fn resource_from_config_and_env() {
    let env = HashMap::from([
        (
            "OTEL_RESOURCE_ATTRIBUTES".to_string(),
            "service.version=2.0,team=pay%20ments,service.name=ignored,=x,bad".to_string(),
        ),
        ("POD_NAME".to_string(), "checkout-7d9".to_string()),
        ("K8S_NAMESPACE_NAME".to_string(), "shop".to_string()),
        ("POD_NAMESPACE".to_string(), "other".to_string()),
    ]);
    let r = Resource::new(
        ServiceInfo {
            name: Some("checkout"),
            version: Some("1.4.2"),
            environment: Some("prod"),
        },
        &env,
    );
    assert_eq!(r.service_name(), "checkout");
    assert_eq!(r.get("service.version"), Some("2.0"), "env beats file");
    assert_eq!(r.get("deployment.environment.name"), Some("prod"));
    assert_eq!(r.get("k8s.pod.name"), Some("checkout-7d9"));
    assert_eq!(r.get("k8s.namespace.name"), Some("shop"));
    assert_eq!(r.get("k8s.node.name"), None);
    assert_eq!(r.get("team"), Some("pay ments"));
    assert_eq!(r.get("telemetry.sdk.language"), Some("rust"));
    assert_eq!(r.get("service.instance.id").map(str::len), Some(36));
    assert_eq!(r.attributes[0].0, "service.name");

    let bare = Resource::new(ServiceInfo::default(), &HashMap::new());
    assert_eq!(bare.service_name(), "unknown_service:sidetrace");
    let named = Resource::new(
        ServiceInfo::default(),
        &HashMap::from([("OTEL_SERVICE_NAME".to_string(), "from-env".to_string())]),
    );
    assert_eq!(named.service_name(), "from-env");
}
