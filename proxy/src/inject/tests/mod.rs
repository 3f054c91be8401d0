mod manifests;

use super::{
    patch::apply,
    pod::{SAMPLING_RATIO, STATUS},
    template::Templates,
    *,
};

fn injector() -> Injector {
    Injector::new(&ChartValues::defaults().unwrap(), "shop").unwrap()
}

fn inject(input: &str) -> Report {
    process(
        input,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap()
}

fn env(container: &Value) -> Vec<(String, Option<String>)> {
    container
        .get("env")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.get("name").unwrap().as_str().unwrap().to_string(),
                e.get("value").and_then(Value::as_str).map(str::to_string),
            )
        })
        .collect()
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  namespace: shop
spec:
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      containers:
        - name: app
          image: ghcr.io/acme/checkout:1.4.2
          ports:
            - {name: http, containerPort: 8080}
        - name: log-shipper
          image: fluent/fluent-bit:3
";

const SERVICE: &str = "\
# the app's Service, kept as written
apiVersion: v1
kind: Service
metadata: {name: checkout}   # flow style stays
spec:
  ports: [{port: 80, targetPort: st-inbound}]
";

#[test]
fn the_embedded_definition_has_the_three_blocks() {
    let t = Templates::parse(sidecar::SIDECAR_TEMPLATE).unwrap();
    let mut names: Vec<&str> = t.names().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "sidetrace.sidecar.annotations",
            "sidetrace.sidecar.container",
            "sidetrace.sidecar.volumes"
        ]
    );
}

#[test]
fn a_comment_may_hold_braces() {
    let t = Templates::parse("{{/* see {{ .a }} */}}\n{{- define \"x\" -}}ok{{- end }}").unwrap();
    assert_eq!(t.render("x", &[&Value::object()]).unwrap(), "ok");
}

#[test]
fn injects_a_native_sidecar_with_everything_the_chart_gives() {
    let report = inject(DEPLOYMENT);
    assert_eq!((report.changed, report.unchanged, report.others), (1, 0, 0));
    assert!(
        report.notes[0].contains("injected (native sidecar, app port 8080, service \"checkout\")")
    );
    let out = yaml(&report.output);
    let pod = out.at("spec.template").unwrap();
    let init = pod.at("spec.initContainers").unwrap().as_array().unwrap();
    assert_eq!(init.len(), 1);
    let c = &init[0];
    let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    assert_eq!(
        keys[0], "name",
        "the container reads in the template's order"
    );
    assert_eq!(c.get("restartPolicy").unwrap().as_str(), Some("Always"));
    assert_eq!(
        c.get("image").unwrap().as_str(),
        Some(format!("ghcr.io/sidetrace/sidetrace:{}", values::APP_VERSION).as_str())
    );
    let env = env(c);
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "K8S_POD_NAME",
            "K8S_NAMESPACE_NAME",
            "K8S_NODE_NAME",
            "SIDETRACE_CONFIG",
            "SIDETRACE_INBOUND",
            "SIDETRACE_UPSTREAM",
            "SIDETRACE_ADMIN",
            "SIDETRACE_DRAIN_DELAY",
            "SIDETRACE_SERVICE_NAME",
            "SIDETRACE_WORKER_THREADS",
            "SIDETRACE_LOG_LEVEL",
            "SIDETRACE_LOG_FORMAT",
            "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES"
        ]
    );
    let value = |n: &str| env.iter().find(|(k, _)| k == n).unwrap().1.clone().unwrap();
    assert_eq!(value("SIDETRACE_UPSTREAM"), "http://127.0.0.1:8080");
    assert_eq!(value("SIDETRACE_INBOUND"), "0.0.0.0:15080");
    assert_eq!(value("SIDETRACE_WORKER_THREADS"), "2");
    // stopped after the app, when the pod has left the endpoints: no delay of its own
    assert_eq!(value("SIDETRACE_DRAIN_DELAY"), "0s");
    assert_eq!(value("OTEL_SERVICE_NAME"), "checkout");
    assert_eq!(
        c.at("readinessProbe.httpGet.path").unwrap().as_str(),
        Some("/ready")
    );
    assert_eq!(
        c.at("securityContext.runAsUser").unwrap().as_u64(),
        Some(65532)
    );
    let vols = pod.at("spec.volumes").unwrap().as_array().unwrap();
    assert_eq!(
        vols[0],
        yaml("name: sidetrace-config\nconfigMap: {name: shop-sidetrace-config}")
    );
    let ann = pod.at("metadata.annotations").unwrap();
    assert_eq!(
        ann.get("prometheus.io/port").unwrap().as_str(),
        Some("15090")
    );
    // the service name chosen (from the app label), for the monitors' `service` label
    assert_eq!(
        ann.get("sidetrace.io/service-name").unwrap().as_str(),
        Some("checkout")
    );
    let status: serde_json::Value =
        serde_json::from_str(ann.get(STATUS).unwrap().as_str().unwrap()).unwrap();
    assert_eq!(status["mode"], "native");
    assert_eq!(
        status["created"],
        serde_json::json!([
            "spec.initContainers",
            "spec.volumes",
            "metadata.annotations"
        ])
    );
    // the app containers are untouched
    assert_eq!(
        pod.at("spec.containers").unwrap(),
        yaml(DEPLOYMENT)
            .at("spec.template.spec.containers")
            .unwrap()
    );
}

#[test]
fn pod_annotations_override_service_sampling_config_map_and_mode() {
    let input = "\
kind: Pod
metadata:
  generateName: worker-
  labels: {app.kubernetes.io/name: billing}
  annotations:
    sidetrace.io/service-name: payments
    sidetrace.io/sampling-ratio: '0.25'
    sidetrace.io/config-map: payments-sidetrace
    sidetrace.io/mode: container
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}
";
    let out = yaml(&inject(input).output);
    let c = &out.at("spec.containers").unwrap().as_array().unwrap()[1];
    let vars = env(c);
    let get = |n: &str| {
        vars.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone().unwrap())
    };
    assert_eq!(get("OTEL_SERVICE_NAME").as_deref(), Some("payments"));
    assert_eq!(
        get("OTEL_TRACES_SAMPLER").as_deref(),
        Some("parentbased_traceidratio")
    );
    assert_eq!(get("OTEL_TRACES_SAMPLER_ARG").as_deref(), Some("0.25"));
    assert_eq!(
        out.at("spec.volumes").unwrap().as_array().unwrap()[0]
            .at("configMap.name")
            .unwrap()
            .as_str(),
        Some("payments-sidetrace")
    );
    // Without the annotation: the label, then the generateName stem.
    let labelled = input.replace("    sidetrace.io/service-name: payments\n", "");
    let out = yaml(&inject(&labelled).output);
    let c = &out.at("spec.containers").unwrap().as_array().unwrap()[1];
    assert!(env(c).contains(&("OTEL_SERVICE_NAME".into(), Some("billing".into()))));
    let bare = labelled.replace("  labels: {app.kubernetes.io/name: billing}\n", "");
    let out = yaml(&inject(&bare).output);
    let c = &out.at("spec.containers").unwrap().as_array().unwrap()[1];
    assert!(env(c).contains(&("OTEL_SERVICE_NAME".into(), Some("worker".into()))));
    for (key, value, needle) in [
        (SAMPLING_RATIO, "'1.5'", "is not a ratio between 0 and 1"),
        (
            "sidetrace.io/config-map",
            "Bad_Name",
            "is not a ConfigMap name",
        ),
        (
            "sidetrace.io/mode",
            "sidecar",
            "is neither native nor container",
        ),
    ] {
        let bad = format!(
            "kind: Pod\nmetadata: {{name: p, annotations: {{{key}: {value}}}}}\nspec: {{containers: [{{name: a, image: i, ports: [{{containerPort: 80}}]}}]}}\n"
        );
        let e = process(
            &bad,
            &injector(),
            Action::Inject {
                mode: Mode::Native,
                app_port: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("metadata.annotations.{key}")) && e.contains(needle),
            "{e}"
        );
    }
}

#[test]
fn the_patch_is_what_inject_applies() {
    let pod = yaml(
        "metadata: {name: p}\nspec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}",
    );
    let opts = PodOptions {
        mode: Mode::Native,
        app_port: None,
        workload_name: Some("p"),
    };
    let Plan::Inject { ops, .. } = plan_inject(&injector(), &pod, &opts).unwrap() else {
        panic!("expected a patch");
    };
    let mut patched = pod.clone();
    apply(&mut patched, &ops).unwrap();
    let doc = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}\n";
    let mut via_cli = yaml(&inject(doc).output);
    via_cli.as_object_mut().unwrap().shift_remove("kind");
    assert_eq!(patched, via_cli);
}

#[test]
fn values_files_change_the_sidecar() {
    let mut values = ChartValues::defaults().unwrap();
    values.merge(yaml(
        "environment: staging\nsidetrace:\n  ports: {outbound: 15081}\n  tls: {secretName: web-tls}\n  otel: {endpoint: 'http://collector:4317'}\n  extraEnv: [{name: EXTRA, value: 'yes'}]\n  resources: null\n",
    ));
    let inj = Injector::new(&values, "web").unwrap();
    let pod = yaml("metadata: {name: p}\nspec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}");
    let opts = PodOptions {
        mode: Mode::Native,
        app_port: None,
        workload_name: Some("p"),
    };
    let Plan::Inject { ops, .. } = plan_inject(&inj, &pod, &opts).unwrap() else {
        panic!()
    };
    let mut out = pod.clone();
    apply(&mut out, &ops).unwrap();
    let c = &out.at("spec.initContainers").unwrap().as_array().unwrap()[0];
    let env = env(c);
    assert!(env.contains(&("SIDETRACE_OUTBOUND".into(), Some("127.0.0.1:15081".into()))));
    assert!(env.contains(&(
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        Some("http://collector:4317".into())
    )));
    assert_eq!(env.last().unwrap(), &("EXTRA".into(), Some("yes".into())));
    assert!(
        c.get("resources").is_none(),
        "no resources, no resources key, as the chart does"
    );
    let mounts = c.get("volumeMounts").unwrap().as_array().unwrap();
    assert_eq!(mounts.len(), 2);
    let vols = out.at("spec.volumes").unwrap().as_array().unwrap();
    assert_eq!(
        vols[1],
        yaml("name: sidetrace-tls\nsecret: {secretName: web-tls}")
    );
    assert_eq!(
        vols[0].at("configMap.name").unwrap().as_str(),
        Some("web-sidetrace-config")
    );
}

#[test]
fn the_per_shape_copy_is_what_rendering_gives() {
    let mut values = ChartValues::defaults().unwrap();
    values.merge(yaml(
        "sidetrace:\n  tls: {secretName: t}\n  otel: {tracesSampler: traceidratio, tracesSamplerArg: '0.5'}\n",
    ));
    for inj in [injector(), Injector::new(&values, "r").unwrap()] {
        for (mode, service, config_map, ratio) in [
            (Mode::Native, "checkout", "cm", None),
            (Mode::Container, "checkout", "cm", Some("0.25")),
            (Mode::Native, "true", "8080", Some("1")),
            (Mode::Native, "a \"quoted\"\nname: {x}", "c.m", None),
            (
                Mode::Container,
                "\u{E000}0\u{E001} looks like a placeholder",
                "cm",
                Some("0"),
            ),
            (Mode::Native, "ünïcødé ☃ {{ .serviceName }}", "cm", None),
        ] {
            let p = SidecarParams {
                mode,
                app_port: 8080,
                service_name: service,
                config_map,
                sampling_ratio: ratio,
                resources: None,
            };
            let reference = inj.render(&p).unwrap();
            assert_eq!(inj.sidecar(&p).unwrap(), reference, "{service:?}");
            assert_eq!(
                inj.sidecar(&p).unwrap(),
                reference,
                "second use of the shape"
            );
        }
    }
}

#[test]
fn resource_annotations_override_the_values_key_by_key() {
    let input = "\
kind: Pod
metadata:
  name: worker
  annotations:
    sidetrace.io/proxy-cpu-request: 200m
    sidetrace.io/proxy-memory-limit: 256Mi
    sidetrace.io/proxy-cpu-limit: '1'
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}
";
    let out = yaml(&inject(input).output);
    let c = &out.at("spec.initContainers").unwrap().as_array().unwrap()[0];
    // the values' memory request (32Mi) stays; the rest comes from the pod
    assert_eq!(
        c.get("resources").unwrap(),
        &yaml("requests: {cpu: 200m, memory: 32Mi}\nlimits: {memory: 256Mi, cpu: '1'}")
    );
    // without resources in the values, the key is added where the definition puts it
    let mut values = ChartValues::defaults().unwrap();
    values.merge(yaml("sidetrace: {resources: null}"));
    let inj = Injector::new(&values, "shop").unwrap();
    let out = process(
        input,
        &inj,
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap();
    let out = yaml(&out.output);
    let c = &out.at("spec.initContainers").unwrap().as_array().unwrap()[0];
    let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    let at = keys.iter().position(|k| *k == "resources").unwrap();
    assert_eq!(keys[at - 1], "readinessProbe");
    assert_eq!(
        c.get("resources").unwrap(),
        &yaml("requests: {cpu: 200m}\nlimits: {memory: 256Mi, cpu: '1'}")
    );
    for bad in ["lots", "1.2.3", "100 m", "", "5Mb", "1e", "-1", "-100m"] {
        let doc = format!(
            "kind: Pod\nmetadata: {{name: p, annotations: {{sidetrace.io/proxy-memory-request: '{bad}'}}}}\nspec: {{containers: [{{name: a, image: i, ports: [{{containerPort: 80}}]}}]}}\n"
        );
        let e = process(
            &doc,
            &injector(),
            Action::Inject {
                mode: Mode::Native,
                app_port: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("metadata.annotations.sidetrace.io/proxy-memory-request")
                && e.contains("is not a Kubernetes quantity"),
            "{bad:?}: {e}"
        );
    }
    for good in ["1", "0.5", ".5", "100m", "64Mi", "1e3", "2E-2", "+1G"] {
        let doc = format!(
            "kind: Pod\nmetadata: {{name: p, annotations: {{sidetrace.io/proxy-cpu-limit: '{good}'}}}}\nspec: {{containers: [{{name: a, image: i, ports: [{{containerPort: 80}}]}}]}}\n"
        );
        inject(&doc);
    }
}

#[test]
fn the_default_container_is_the_app_unless_the_pod_names_one() {
    // the app port is declared by the second container: that one is the app
    let input = "\
kind: Pod
metadata: {name: p}
spec:
  containers:
    - {name: log-shipper, image: fluent}
    - {name: web, image: i, ports: [{containerPort: 8080}]}
";
    for mode in [Mode::Native, Mode::Container] {
        let report = process(
            input,
            &injector(),
            Action::Inject {
                mode,
                app_port: None,
            },
        )
        .unwrap();
        let out = yaml(&report.output);
        assert_eq!(
            out.at("metadata.annotations")
                .unwrap()
                .get(pod::DEFAULT_CONTAINER)
                .unwrap()
                .as_str(),
            Some("web"),
            "{mode:?}"
        );
        // uninject takes it away again
        let back = process(&report.output, &injector(), Action::Uninject).unwrap();
        assert_eq!(yaml(&back.output), yaml(input));
    }
    let named = input.replace(
        "metadata: {name: p}",
        "metadata: {name: p, annotations: {kubectl.kubernetes.io/default-container: log-shipper}}",
    );
    let out = yaml(&inject(&named).output);
    let ann = out.at("metadata.annotations").unwrap();
    assert_eq!(
        ann.get(pod::DEFAULT_CONTAINER).unwrap().as_str(),
        Some("log-shipper")
    );
    let status: serde_json::Value =
        serde_json::from_str(ann.get(STATUS).unwrap().as_str().unwrap()).unwrap();
    let added = status["annotations"].as_array().unwrap();
    assert!(!added.contains(&pod::DEFAULT_CONTAINER.into()));
    assert!(added.contains(&pod::SERVICE_NAME.into()), "{added:?}");
    // with --app-port and no declared port: the first container
    let bare = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: first, image: i}, {name: second, image: j}]}\n";
    let out = process(
        bare,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: Some(9000),
        },
    )
    .unwrap();
    assert_eq!(
        yaml(&out.output)
            .at("metadata.annotations")
            .unwrap()
            .get(pod::DEFAULT_CONTAINER)
            .unwrap()
            .as_str(),
        Some("first")
    );
}

#[test]
fn extra_container_fields_merge_last() {
    let mut values = ChartValues::defaults().unwrap();
    values.merge(yaml(
        "sidetrace:\n  extraContainerFields:\n    terminationMessagePolicy: FallbackToLogsOnError\n    securityContext: {runAsUser: 1000}\n    resources: {limits: {cpu: '2'}}\n",
    ));
    let inj = Injector::new(&values, "shop").unwrap();
    let input = "kind: Pod\nmetadata: {name: p, annotations: {sidetrace.io/proxy-cpu-limit: '1'}}\nspec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}\n";
    let out = process(
        input,
        &inj,
        Action::Inject {
            mode: Mode::Container,
            app_port: None,
        },
    )
    .unwrap();
    let out = yaml(&out.output);
    let c = &out.at("spec.containers").unwrap().as_array().unwrap()[1];
    assert_eq!(
        c.get("terminationMessagePolicy").unwrap().as_str(),
        Some("FallbackToLogsOnError")
    );
    assert_eq!(
        c.at("securityContext.runAsUser").unwrap().as_u64(),
        Some(1000)
    );
    assert_eq!(
        c.at("securityContext.readOnlyRootFilesystem"),
        Some(&Value::Bool(true))
    );
    // merged last, as the chart merges it: over the pod's annotation too
    assert_eq!(c.at("resources.limits.cpu").unwrap().as_str(), Some("2"));
    let p = SidecarParams {
        mode: Mode::Native,
        app_port: 80,
        service_name: "s",
        config_map: "c",
        sampling_ratio: None,
        resources: None,
    };
    assert_eq!(inj.sidecar(&p).unwrap(), inj.render(&p).unwrap());
}
