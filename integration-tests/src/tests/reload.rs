//! Config reload: the chain is swapped on file change; a bad file is rejected.

use http::StatusCode;

use crate::{client::Client, metric_sum, proxy::Proxy, upstream::Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_swap_the_chain_and_bad_files_are_rejected() {
    let dir = std::env::temp_dir().join(format!("sidetrace-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sidetrace.yaml");
    let up = Upstream::echo().await;
    let proxy = Proxy::from_yaml("filters:\n  - timeout: { request: 100ms }\n")
        .config_file(&path)
        .upstream(up.url())
        .run()
        .await;
    let client = Client::http1();
    // One keep-alive connection across the reload: connections are not dropped.
    assert_eq!(
        client.get(&proxy.url("/?delay_ms=400")).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );

    std::fs::write(&path, "filters:\n  - timeout: { request: 5s }\n").unwrap();
    crate::assert_eventually!(
        client.get(&proxy.url("/?delay_ms=400")).await.status == StatusCode::OK,
        "the new timeout took effect"
    );

    std::fs::write(
        &path,
        "filters:\n  - timeout: { request: 5s, jitter: 1s }\n",
    )
    .unwrap();
    crate::assert_eventually!(
        metric_sum(
            &client.get(&proxy.admin_url("/metrics")).await.text(),
            "sidetrace_config_reloads_total",
            &[("result", "failure")]
        ) >= 1.0,
        "the bad file was counted as a failed reload"
    );
    assert_eq!(
        client.get(&proxy.url("/?delay_ms=400")).await.status,
        StatusCode::OK,
        "the good chain stays"
    );
    let text = client.get(&proxy.admin_url("/metrics")).await.text();
    assert!(
        metric_sum(
            &text,
            "sidetrace_config_reloads_total",
            &[("result", "success")]
        ) >= 1.0,
        "{text}"
    );
    proxy.shutdown();
}
