//! `kredis dev`'s foreground loop: SIGTERM stops the control plane and every process it
//! started. A separate test binary, because it signals its own process.

use crate::common;

use std::time::Duration;

use common::{eventually, start};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use nix::sys::signal::{kill, raise, Signal};
use nix::unistd::Pid;
use serde_json::json;

#[tokio::test]
async fn sigterm_stops_everything() {
    let h = start(1, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1000"]}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pid: i32 = eventually("pod running", Duration::from_secs(30), || async {
        let p = pods.get("s").await.ok()?;
        let id = p
            .status?
            .container_statuses?
            .first()?
            .container_id
            .clone()?;
        id.strip_prefix("process://")?.parse().ok()
    })
    .await;
    let common::Harness { cluster, dir } = h;
    let url = cluster.url();
    let task = tokio::spawn(kredis_devkube::run_until_signal(cluster));
    // On this current-thread runtime one yield polls the task once, which installs the
    // handlers synchronously before its first await.
    tokio::task::yield_now().await;
    // Process-wide: every signal listener in this test binary receives it, so no other test
    // here may listen for SIGTERM (controller.rs once did, and stopped when this ran).
    raise(Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let gone =
        kill(Pid::from_raw(pid), None).is_err() || state.split_whitespace().nth(2) == Some("Z");
    assert!(gone, "container process {pid} survived SIGTERM");
    let probe = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await;
    assert!(probe.is_err(), "API server still listening");
    drop(dir);
}
