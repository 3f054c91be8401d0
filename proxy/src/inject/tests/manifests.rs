//! Whole manifests: documents, kinds, formats, errors, idempotence and
//! `--uninject`.

use super::*;

#[test]
fn idempotent_and_reversible_and_other_documents_pass_byte_for_byte() {
    let input = format!("{SERVICE}---\n{DEPLOYMENT}---\n# trailing comment only\n");
    let once = inject(&input);
    assert_eq!((once.changed, once.others), (1, 1));
    assert!(once.output.starts_with(SERVICE), "{}", once.output);
    assert!(once.output.ends_with("---\n# trailing comment only\n"));
    let twice = inject(&once.output);
    assert_eq!(twice.output, once.output, "a second run changes nothing");
    assert_eq!((twice.changed, twice.unchanged), (0, 1));
    let back = process(&once.output, &injector(), Action::Uninject).unwrap();
    assert_eq!(back.changed, 1);
    assert_eq!(docs(&back.output), docs(&input));
    assert!(back.output.starts_with(SERVICE));
    let again = process(&back.output, &injector(), Action::Uninject).unwrap();
    assert_eq!((again.changed, again.output), (0, back.output.clone()));
}

#[test]
fn container_mode_appends_and_uninject_keeps_existing_lists() {
    let input = "\
kind: Pod
apiVersion: v1
metadata:
  name: web-0
  annotations: {team: a, prometheus.io/scrape: 'false'}
spec:
  initContainers: [{name: migrate, image: m}]
  volumes: [{name: data, emptyDir: {}}]
  containers: [{name: web, image: w, ports: [{containerPort: 9000}]}]
";
    let report = process(
        input,
        &injector(),
        Action::Inject {
            mode: Mode::Container,
            app_port: None,
        },
    )
    .unwrap();
    let out = yaml(&report.output);
    let names = |key: &str| -> Vec<String> {
        out.at(key)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.get("name").unwrap().as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("spec.containers"), ["web", "sidetrace"]);
    assert_eq!(names("spec.initContainers"), ["migrate"]);
    assert_eq!(names("spec.volumes"), ["data", "sidetrace-config"]);
    let ann = out.at("metadata.annotations").unwrap();
    assert_eq!(
        ann.get("prometheus.io/scrape").unwrap().as_str(),
        Some("false"),
        "the pod's own scrape settings win"
    );
    let back = process(&report.output, &injector(), Action::Uninject).unwrap();
    assert_eq!(yaml(&back.output), yaml(input));

    let native = inject(input);
    let out = yaml(&native.output);
    let init = out.at("spec.initContainers").unwrap().as_array().unwrap();
    assert_eq!(
        init[0].get("name").unwrap().as_str(),
        Some("sidetrace"),
        "first init container"
    );
    let back = process(&native.output, &injector(), Action::Uninject).unwrap();
    assert_eq!(yaml(&back.output), yaml(input));
}

#[test]
fn app_port_comes_from_flag_annotation_or_the_only_port() {
    let two_ports = DEPLOYMENT.replace(
        "          image: fluent/fluent-bit:3\n",
        "          image: fluent/fluent-bit:3\n          ports: [{name: metrics, containerPort: 2020}]\n",
    );
    let e = process(
        &two_ports,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("nothing was written"), "{msg}");
    assert!(
        msg.contains("document 1 (Deployment \"shop/checkout\"): spec.template.spec.containers[*].ports: 2 candidate app ports (8080 in \"app\", 2020 in \"log-shipper\")"),
        "{msg}"
    );
    let with_flag = process(
        &two_ports,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: Some(2020),
        },
    )
    .unwrap();
    assert!(with_flag.notes[0].contains("app port 2020"));
    for (note, expected) in [("'9090'", "9090"), ("metrics", "2020"), ("http", "8080")] {
        let annotated = two_ports.replace(
            "      labels: {app: checkout}\n",
            &format!("      labels: {{app: checkout}}\n      annotations: {{sidetrace.io/app-port: {note}}}\n"),
        );
        let r = inject(&annotated);
        assert!(
            r.notes[0].contains(&format!("app port {expected}")),
            "{note}: {:?}",
            r.notes
        );
    }
    let no_port = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: i}]}\n";
    let e = process(
        no_port,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("document 1 (Pod \"p\"): spec.containers[*].ports: no container port"),
        "{e}"
    );
    let bad = "kind: Pod\nmetadata: {name: p, annotations: {sidetrace.io/app-port: web}}\nspec: {containers: [{name: a, image: i}]}\n";
    let e = process(
        bad,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("metadata.annotations.sidetrace.io/app-port: \"web\" is neither a port number nor the name"), "{e}");
}

#[test]
fn errors_name_every_bad_document_and_nothing_is_written() {
    let input = "\
kind: Pod
metadata: {name: empty}
spec: {containers: []}
---
kind: Deployment
metadata: {name: broken}
spec: {replicas: 1}
---
kind: Pod
metadata: {name: odd, annotations: {sidetrace.io/inject: 'true'}}
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}
---
kind: Pod
metadata: {name: clash}
spec: {containers: [{name: a, image: i, ports: [{containerPort: 15090}]}]}
---
kind: Pod
metadata: {name: host}
spec: {hostNetwork: true, containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}
---
kind: Pod
metadata: {labels: {app: x}}
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}], volumes: [{name: sidetrace-config, emptyDir: {}}]}
---
a: [1
";
    let e = process(
        input,
        &injector(),
        Action::Inject {
            mode: Mode::Native,
            app_port: None,
        },
    )
    .unwrap_err();
    let lines = &e.0;
    assert_eq!(lines.len(), 7, "{e}");
    for (line, needle) in lines.iter().zip([
        "document 1 (Pod \"empty\"): spec.containers: no containers",
        "document 2 (Deployment \"broken\"): spec.template: missing",
        "document 3 (Pod \"odd\"): metadata.annotations.sidetrace.io/inject: \"true\" is neither enabled nor disabled",
        "document 4 (Pod \"clash\"): spec.containers[0].ports: container \"a\" uses port 15090, the proxy's admin port",
        "document 5 (Pod \"host\"): spec.hostNetwork: the pod uses the node's network",
        "document 6 (Pod): spec.volumes: the pod already has a volume named \"sidetrace-config\"",
        "document 7 (from line 25): not valid YAML",
    ]) {
        assert!(line.contains(needle), "{line}\n  expected: {needle}");
    }
}

#[test]
fn disabled_and_chart_injected_pods_are_left_alone() {
    let input = "\
kind: Pod
metadata: {name: a, annotations: {sidetrace.io/inject: disabled}}
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}]}
---
kind: Pod
metadata: {name: b}
spec: {containers: [{name: a, image: i, ports: [{containerPort: 80}]}, {name: sidetrace, image: s}]}
";
    let r = inject(input);
    assert_eq!(r.output, input);
    assert_eq!((r.changed, r.unchanged), (0, 2));
    assert!(r.notes[0].contains("disabled"));
    assert!(r.notes[1].contains("already has the sidecar"));
    // The chart's template added no status: uninject removes the container by name.
    let u = process(input, &injector(), Action::Uninject).unwrap();
    let second = &docs(&u.output)[1];
    assert_eq!(
        second
            .at("spec.containers")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn lists_json_and_every_workload_kind() {
    let pod_spec = r#"{"containers":[{"name":"a","image":"i","ports":[{"containerPort":80}]}]}"#;
    let template = format!(r#"{{"metadata":{{"labels":{{"app":"x"}}}},"spec":{pod_spec}}}"#);
    let items: Vec<String> = [
        (
            "apps/v1",
            "Deployment",
            format!(r#"{{"template":{template}}}"#),
        ),
        (
            "apps/v1",
            "StatefulSet",
            format!(r#"{{"template":{template}}}"#),
        ),
        (
            "apps/v1",
            "DaemonSet",
            format!(r#"{{"template":{template}}}"#),
        ),
        (
            "apps/v1",
            "ReplicaSet",
            format!(r#"{{"template":{template}}}"#),
        ),
        ("batch/v1", "Job", format!(r#"{{"template":{template}}}"#)),
        (
            "batch/v1",
            "CronJob",
            format!(
                r#"{{"schedule":"* * * * *","jobTemplate":{{"spec":{{"template":{template}}}}}}}"#
            ),
        ),
        ("v1", "Pod", pod_spec.to_string()),
        ("v1", "ConfigMap", "null".to_string()),
    ]
    .into_iter()
    .map(|(api, kind, spec)| {
        format!(
            r#"{{"apiVersion":"{api}","kind":"{kind}","metadata":{{"name":"n"}},"spec":{spec}}}"#
        )
    })
    .collect();
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    );
    let other = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}"#;
    let input = format!("{list}\n{other}\n");
    let r = inject(&input);
    assert_eq!((r.changed, r.others), (7, 1), "{:?}", r.notes);
    assert!(
        r.output.trim_end().ends_with(other),
        "JSON passes through as written"
    );
    let out: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&r.output)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let injected = |item: &serde_json::Value| {
        let pod = match item["kind"].as_str().unwrap() {
            "Pod" => item.clone(),
            "CronJob" => item["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => item["spec"]["template"].clone(),
        };
        pod["spec"]["initContainers"][0]["name"] == "sidetrace"
    };
    let kinds: Vec<bool> = out[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(injected)
        .collect();
    assert_eq!(kinds, [true, true, true, true, true, true, true, false]);
    let again = inject(&r.output);
    assert_eq!(again.output, r.output);
    let back = process(&r.output, &injector(), Action::Uninject).unwrap();
    let a: Vec<Value> = serde_json::Deserializer::from_str(&back.output)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let b: Vec<Value> = serde_json::Deserializer::from_str(&input)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(a, b);
}
