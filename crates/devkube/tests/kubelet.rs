//! Scheduling and kubelet behaviour over real HTTP with real processes: a redis pod like the
//! operator's runs and becomes ready, anti-affinity spreads a shard, unschedulable pods stay
//! Pending with an event, killed processes restart, deleted pods and nodes take their
//! processes with them, restartPolicy Never ends in Succeeded/Failed.

use crate::common;

use std::time::Duration;

use common::{eventually, start};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn sleeper(name: &str, labels: Value, extra_spec: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1000"]}], "terminationGracePeriodSeconds": 2});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
        .unwrap()
}

fn pid_of(pod: &Pod) -> Option<i32> {
    let id = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()?;
    id.strip_prefix("process://")?.parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie still answers signal 0; look at /proc state too.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state.split_whitespace().nth(2) == Some("Z");
    kill(Pid::from_raw(pid), None).is_ok() && !zombie
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    eventually(what, WAIT, || async {
        let p = pods.get_opt(name).await.ok()??;
        f(&p).then_some(p)
    })
    .await
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn redis_pod_with_exporter_runs_and_becomes_ready() {
    let h = start(2, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "redis-0", "labels": {"app.kubernetes.io/name": "kredis"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "redis", "image": "redis:7.2", "command": ["redis-server"],
                 "args": ["--port", "7101", "--bind", "$(POD_IP)", "--dir", "/data", "--save", "", "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "/data/nodes.conf", "--cluster-announce-ip", "$(POD_IP)"],
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "ports": [{"name": "redis", "containerPort": 7101}, {"name": "bus", "containerPort": 17101}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                 "readinessProbe": {"exec": {"command": ["redis-cli", "-h", "$(POD_IP)", "-p", "7101", "ping"]}, "periodSeconds": 1},
                 "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 1}},
                {"name": "exporter", "image": "oliver006/redis_exporter:v1.62.0", "ports": [{"containerPort": 9121}]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_pod(&pods, "redis-0", "redis pod ready", is_ready).await;
    // A steady pod causes no writes: status carries no churning timestamps (an operator
    // watching pods would otherwise reconcile forever).
    let rv = h.cluster.store().current_rv();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.cluster.store().current_rv(),
        rv,
        "writes while nothing changed"
    );
    let status = p.status.clone().unwrap();
    let ip = status.pod_ip.clone().unwrap();
    assert!(ip.starts_with("127.") && !ip.contains(".0."), "{ip}");
    assert!(status.host_ip.unwrap().contains(".0."));
    let exporter = status
        .container_statuses
        .unwrap()
        .into_iter()
        .find(|c| c.name == "exporter")
        .unwrap();
    assert_eq!(
        exporter.state.unwrap().waiting.unwrap().reason.as_deref(),
        Some("NotRunnableLocally")
    );
    // Redis really listens on the pod IP, with nodes.conf in the pod's emptyDir.
    let mut s = tokio::net::TcpStream::connect((ip.as_str(), 7101))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"PING\r\n").await.unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
    let nodes_conf =
        kredis_devkube::node::pod_dir(h.cluster.dir(), &serde_json::to_value(&p).unwrap())
            .join("volumes/data/nodes.conf");
    eventually("nodes.conf written", WAIT, || async {
        nodes_conf.exists().then_some(())
    })
    .await;

    // Deleting the pod terminates redis and removes the pod.
    let pid = pid_of(&p).unwrap();
    pods.delete("redis-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually("pod gone", WAIT, || async {
        pods.get_opt("redis-0").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("redis process gone", WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn anti_affinity_spreads_a_shard_and_unschedulable_pods_stay_pending() {
    let h = start(3, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"kredis.io/shard": "0"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..4 {
        pods.create(
            &PostParams::default(),
            &sleeper(
                &format!("s0-{i}"),
                json!({"kredis.io/shard": "0"}),
                anti.clone(),
            ),
        )
        .await
        .unwrap();
    }
    let nodes = eventually("three scheduled", WAIT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let mut nodes: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        (nodes.len() == 3).then_some(nodes)
    })
    .await;
    nodes
        .windows(2)
        .for_each(|w| assert_ne!(w[0], w[1], "two pods of one shard on {}", w[0]));
    // The fourth fits nowhere: Pending, PodScheduled=False, and a FailedScheduling event.
    let pending = eventually("one unschedulable", WAIT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        })
    })
    .await;
    assert_eq!(
        pending.status.clone().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let evs = events.list(&ListParams::default()).await.unwrap();
    assert!(evs
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("FailedScheduling")
            && e.involved_object.name.as_deref() == Some(&pending.name_any())));

    // A new node makes room; a cordoned node gets nothing.
    let node_api: Api<Node> = Api::all(client.clone());
    let cordoned: Node = serde_json::from_value(
        json!({"metadata": {"name": "dev-node-9"}, "spec": {"unschedulable": true}}),
    )
    .unwrap();
    node_api
        .create(&PostParams::default(), &cordoned)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // give the scheduler a chance to misbehave
    assert!(pods
        .get(&pending.name_any())
        .await
        .unwrap()
        .spec
        .unwrap()
        .node_name
        .is_none());
    node_api
        .patch(
            "dev-node-9",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    wait_pod(
        &pods,
        &pending.name_any(),
        "scheduled on the uncordoned node",
        |p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("dev-node-9"),
    )
    .await;
}

#[tokio::test]
async fn host_port_conflicts_and_node_selectors() {
    let h = start(2, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let hp = |sel: &str| json!({"nodeSelector": {"kubernetes.io/hostname": sel}, "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1000"], "ports": [{"containerPort": 7201, "hostPort": 7201}]}]});
    pods.create(
        &PostParams::default(),
        &sleeper("a", json!({}), hp("dev-node-1")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &sleeper("b", json!({}), hp("dev-node-1")),
    )
    .await
    .unwrap();
    wait_pod(&pods, "a", "a bound to node 1", |p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("dev-node-1")
    })
    .await;
    let b = wait_pod(&pods, "b", "b unschedulable", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
    })
    .await;
    let msg = b
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message
        .unwrap();
    assert!(msg.contains("free ports"), "{msg}");
}

#[tokio::test]
async fn killed_process_restarts_and_deleted_node_takes_its_pods() {
    let h = start(2, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &sleeper(
            "r",
            json!({}),
            json!({"nodeSelector": {"kubernetes.io/hostname": "dev-node-2"}}),
        ),
    )
    .await
    .unwrap();
    let p = wait_pod(&pods, "r", "running", |p| {
        is_ready(p) && pid_of(p).is_some()
    })
    .await;
    let pid = pid_of(&p).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let p = wait_pod(&pods, "r", "restarted", |p| {
        let cs = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first().cloned());
        cs.is_some_and(|c| c.restart_count >= 1 && c.ready) && pid_of(p).is_some_and(|n| n != pid)
    })
    .await;
    let new_pid = pid_of(&p).unwrap();
    assert!(alive(new_pid));
    // kubectl describe shows what happened.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=r"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for want in ["Scheduled", "Started", "BackOff"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} missing from {reasons:?}"
        );
    }

    // restartPolicy Never: exit codes decide Succeeded or Failed.
    let once = |name: &str, cmd: &str| {
        sleeper(
            name,
            json!({}),
            json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", cmd]}]}),
        )
    };
    pods.create(&PostParams::default(), &once("ok", "exit 0"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &once("bad", "exit 3"))
        .await
        .unwrap();
    wait_pod(&pods, "ok", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    wait_pod(&pods, "bad", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;

    // Deleting the node kills its processes and collects its pods.
    h.cluster.delete_node("dev-node-2").unwrap();
    eventually("pod on deleted node gone", WAIT, || async {
        pods.get_opt("r").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("its process gone", WAIT, || async {
        (!alive(new_pid)).then_some(())
    })
    .await;

    // Adding a node adds a worker that runs pods.
    let name = h.cluster.add_node().unwrap();
    pods.create(
        &PostParams::default(),
        &sleeper(
            "n",
            json!({}),
            json!({"nodeSelector": {"kubernetes.io/hostname": name}}),
        ),
    )
    .await
    .unwrap();
    wait_pod(&pods, "n", "running on the new node", is_ready).await;

    // Shutting down leaves no process behind.
    let p = pods.get("n").await.unwrap();
    let pid = pid_of(&p).unwrap();
    let common::Harness { cluster, dir } = h;
    cluster.shutdown().await;
    assert!(!alive(pid), "process {pid} survived shutdown");
    drop(dir);
}

#[tokio::test]
async fn prestop_holds_termination_until_a_forced_delete() {
    let h = start(1, true, |_| {}).await;
    let client = h.cluster.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hold"},
        "spec": {
            "terminationGracePeriodSeconds": 60,
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1000"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "touch /data/prestop-ran; sleep 60"]}}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_pod(&pods, "hold", "running", |p| {
        is_ready(p) && pid_of(p).is_some()
    })
    .await;
    let pid = pid_of(&p).unwrap();
    let marker = kredis_devkube::node::pod_dir(h.cluster.dir(), &serde_json::to_value(&p).unwrap())
        .join("volumes/data/prestop-ran");
    pods.delete("hold", &DeleteParams::default()).await.unwrap();
    eventually("preStop hook ran", WAIT, || async {
        marker.exists().then_some(())
    })
    .await;
    // The hook holds termination: the pod is Terminating and its process still runs.
    let p = pods.get("hold").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert!(alive(pid));
    // A forced delete ends it at once.
    pods.delete(
        "hold",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    eventually("pod gone", WAIT, || async {
        pods.get_opt("hold").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("process gone", Duration::from_secs(5), || async {
        (!alive(pid)).then_some(())
    })
    .await;
}
