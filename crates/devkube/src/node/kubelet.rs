//! One kubelet per node: watches pods bound to its node and runs one worker per pod. A worker
//! allocates the pod IP (`127.1.<node>.<n>`, or the node address for hostNetwork), materialises
//! volumes, runs init containers to completion and then the containers as local processes,
//! restarts them per restartPolicy (with a short crash back-off), runs readiness and liveness
//! probes, reports pod status, and on deletion runs preStop hooks, sends SIGTERM and after the
//! grace period SIGKILL, then completes the deletion. Containers whose command does not exist
//! on this machine are reported waiting with reason `NotRunnableLocally` and do not count
//! towards readiness.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::container::{self, Launch, LaunchError, PodContext};
use super::probe::{self, Timing};
use super::scheduler::set_condition;
use super::{signal_group, ProcessTable};
use crate::meta;
use crate::store::{DeleteOptions, Store, WriteOptions};

/// How often a worker looks at its processes when nothing else happens.
const TICK: Duration = Duration::from_millis(200);
/// How often a running pod's secret and configMap volumes are brought up to date. The real
/// kubelet takes up to its sync period (1 min) plus its cache's TTL; dev mode is quicker so
/// tests of certificate renewal do not wait minutes, and slow enough to cost nothing.
const VOLUME_SYNC: Duration = Duration::from_secs(1);
/// First crash back-off (the real kubelet starts at 10s; dev mode favours fast feedback).
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest honoured grace period (user input must not overflow Instant arithmetic).
const MAX_GRACE_SECONDS: i64 = 86_400;
/// Longest crash back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(20);

/// A running kubelet.
#[derive(Debug)]
pub struct Kubelet {
    /// Node index `i` (address `127.1.0.<i>`).
    pub index: u8,
    /// UID of the Node object it serves.
    pub node_uid: String,
    task: JoinHandle<()>,
}

impl Kubelet {
    /// Starts the kubelet of `node`.
    pub fn start(
        store: Arc<Store>,
        dir: PathBuf,
        node: String,
        node_uid: String,
        block: u8,
        index: u8,
        processes: Arc<ProcessTable>,
    ) -> Self {
        let task = tokio::spawn(run(store, dir, node, block, index, processes));
        Self {
            index,
            node_uid,
            task,
        }
    }

    /// Stops at once: every worker is aborted and its process groups SIGKILLed.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Same as [`Kubelet::kill`] without consuming.
    pub fn abort(&self) {
        self.task.abort();
    }
}

struct Worker {
    tx: watch::Sender<Option<Arc<Value>>>,
    handle: JoinHandle<()>,
}

/// Aborting the kubelet drops this, aborting every worker (whose process guards then kill).
struct Workers(HashMap<String, Worker>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in self.0.values() {
            w.handle.abort();
        }
    }
}

#[derive(Clone)]
struct Shared {
    store: Arc<Store>,
    dir: PathBuf,
    node: String,
    block: u8,
    index: u8,
    processes: Arc<ProcessTable>,
    ips: Arc<Mutex<BTreeSet<u8>>>,
}

async fn run(
    store: Arc<Store>,
    dir: PathBuf,
    node: String,
    block: u8,
    index: u8,
    processes: Arc<ProcessTable>,
) {
    let shared = Shared {
        store: store.clone(),
        dir,
        node: node.clone(),
        block,
        index,
        processes,
        ips: Arc::default(),
    };
    let mut workers = Workers(HashMap::new());
    let mut changed = store.subscribe();
    let Some(pods_info) = store.registry.by_key("pods") else {
        return;
    };
    loop {
        changed.borrow_and_update();
        let (pods, _) = store.snapshot("pods", None);
        let mine: HashMap<String, Arc<Value>> = pods
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node.as_str()))
            .map(|p| (meta::uid(p).to_owned(), p.clone()))
            .collect();
        for (uid, pod) in &mine {
            match workers.0.get(uid) {
                Some(w) => {
                    if w.tx
                        .borrow()
                        .as_ref()
                        .map(|p| meta::meta_str(p, "resourceVersion"))
                        != Some(meta::meta_str(pod, "resourceVersion"))
                    {
                        w.tx.send_replace(Some(pod.clone()));
                    }
                }
                None if meta::is_deleting(pod) => {
                    // Nothing runs for it here: confirm the deletion at once.
                    let opts = DeleteOptions {
                        grace: Some(0),
                        uid: Some(uid.clone()),
                        ..DeleteOptions::default()
                    };
                    let _ = store.delete(&pods_info, meta::namespace(pod), meta::name(pod), &opts);
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod.clone()));
                    let span = tracing::info_span!("pod", namespace = %meta::namespace(pod), pod = %meta::name(pod), node = %node);
                    let handle = tokio::spawn(pod_worker(shared.clone(), rx).instrument(span));
                    workers.0.insert(uid.clone(), Worker { tx, handle });
                }
            }
        }
        for (uid, w) in &workers.0 {
            if !mine.contains_key(uid) && w.tx.borrow().is_some() {
                w.tx.send_replace(None);
            }
        }
        workers.0.retain(|_, w| !w.handle.is_finished());
        tokio::select! {
            res = changed.changed() => if res.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// A running container process; dropping it kills the whole process group.
struct Proc {
    child: tokio::process::Child,
    pgid: i32,
    table: Arc<ProcessTable>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::SIGKILL);
        self.table.remove(self.pgid);
    }
}

/// An allocated pod IP, released on drop.
struct IpLease {
    ips: Arc<Mutex<BTreeSet<u8>>>,
    n: Option<u8>,
}

impl Drop for IpLease {
    fn drop(&mut self) {
        if let Some(n) = self.n {
            self.ips
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&n);
        }
    }
}

struct Rt {
    name: String,
    spec: Value,
    image: String,
    launch: Result<Launch, LaunchError>,
    mounts: Vec<(String, PathBuf)>,
    proc: Option<Proc>,
    started_at: Option<String>,
    restarts: i64,
    last_state: Option<Value>,
    terminated: Option<Value>,
    ready: bool,
    ready_streak: (u32, u32),
    live_fails: u32,
    next_readiness: Instant,
    next_liveness: Instant,
    backoff_until: Option<Instant>,
    backoff: Duration,
    pid: Option<u32>,
}

impl Rt {
    fn new(spec: &Value) -> Self {
        Self {
            name: spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            image: spec
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            spec: spec.clone(),
            launch: Err(LaunchError::Config("not planned".into())),
            mounts: Vec::new(),
            proc: None,
            started_at: None,
            restarts: 0,
            last_state: None,
            terminated: None,
            ready: false,
            ready_streak: (0, 0),
            live_fails: 0,
            next_readiness: Instant::now(),
            next_liveness: Instant::now(),
            backoff_until: None,
            backoff: BACKOFF_START,
            pid: None,
        }
    }

    fn runnable(&self) -> bool {
        !matches!(self.launch, Err(LaunchError::NotRunnable(_)))
    }

    fn status(&self) -> Value {
        let state = if self.proc.is_some() {
            json!({"running": {"startedAt": self.started_at}})
        } else if let Some(t) = &self.terminated {
            json!({"terminated": t})
        } else {
            match &self.launch {
                Err(LaunchError::NotRunnable(m)) => {
                    json!({"waiting": {"reason": "NotRunnableLocally", "message": m}})
                }
                Err(LaunchError::Config(m)) => {
                    json!({"waiting": {"reason": "CreateContainerConfigError", "message": m}})
                }
                Ok(_) if self.backoff_until.is_some() => {
                    json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {}", self.name)}})
                }
                Ok(_) => json!({"waiting": {"reason": "ContainerCreating"}}),
            }
        };
        let mut s = json!({
            "name": self.name, "image": self.image, "imageID": "", "ready": self.ready && self.proc.is_some(),
            "started": self.proc.is_some(), "restartCount": self.restarts, "state": state,
        });
        if let Some(pid) = self.pid {
            s["containerID"] = json!(format!("process://{pid}"));
        }
        s["lastState"] = match &self.last_state {
            Some(t) => json!({"terminated": t}),
            None => json!({}),
        };
        s
    }

    fn start(&mut self, table: &Arc<ProcessTable>) {
        let Ok(l) = &self.launch else { return };
        if table.is_stopping() {
            return;
        }
        match container::spawn(l) {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                let pgid = pid as i32;
                table.add(pgid);
                tracing::info!(container = %self.name, pid, program = %l.program.display(), "container started");
                self.proc = Some(Proc {
                    child,
                    pgid,
                    table: table.clone(),
                });
                self.pid = Some(pid);
                self.started_at = Some(meta::now_rfc3339());
                self.terminated = None;
                self.backoff_until = None;
                self.ready = false;
                self.ready_streak = (0, 0);
                self.live_fails = 0;
                let now = Instant::now();
                self.next_readiness = now
                    + self
                        .spec
                        .get("readinessProbe")
                        .map(|p| Timing::of(p).initial_delay)
                        .unwrap_or_default();
                self.next_liveness = now
                    + self
                        .spec
                        .get("livenessProbe")
                        .map(|p| Timing::of(p).initial_delay)
                        .unwrap_or_default();
            }
            Err(e) => {
                tracing::warn!(container = %self.name, error = %e, "failed to start container");
                self.launch = Err(LaunchError::Config(format!(
                    "failed to start {}: {e}",
                    l.program.display()
                )));
            }
        }
    }

    /// Reaps an exited process; returns its terminated state.
    fn reap(&mut self) -> Option<Value> {
        let p = self.proc.as_mut()?;
        let status = match p.child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(_) => return None,
        };
        self.proc = None; // drop: kills leftovers of the group
        Some(self.terminated_state(status))
    }

    fn terminated_state(&self, status: std::process::ExitStatus) -> Value {
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(9));
        json!({
            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": self.started_at, "finishedAt": meta::now_rfc3339(),
            "containerID": self.pid.map(|p| format!("process://{p}")),
        })
    }
}

fn restart_wanted(policy: &str, exit_code: i64) -> bool {
    match policy {
        "Always" => true,
        "OnFailure" => exit_code != 0,
        _ => false,
    }
}

async fn pod_worker(sh: Shared, mut rx: watch::Receiver<Option<Arc<Value>>>) {
    let Some(mut pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let name = meta::name(&pod).to_owned();
    let ns = meta::namespace(&pod).to_owned();
    let uid = meta::uid(&pod).to_owned();
    let Some(pods_info) = sh.store.registry.by_key("pods") else {
        return;
    };
    let host_ip = format!("127.{}.0.{}", sh.block, sh.index);
    let host_network = pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut lease = IpLease {
        ips: sh.ips.clone(),
        n: None,
    };
    let pod_ip = if host_network {
        host_ip.clone()
    } else {
        let mut used = sh
            .ips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (1..=254u8).find(|n| !used.contains(n)) {
            Some(n) => {
                used.insert(n);
                lease.n = Some(n);
                format!("127.{}.{}.{n}", sh.block, sh.index)
            }
            None => {
                tracing::warn!("no free pod IP on node");
                return;
            }
        }
    };
    let ctx_dir = super::pod_dir(&sh.dir, &pod);
    let policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_owned();
    let mut inits: Vec<Rt> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Rt::new)
        .collect();
    let mut mains: Vec<Rt> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Rt::new)
        .collect();
    let start_time = meta::now_rfc3339();
    let mut planned = false;
    let mut volumes_synced = Instant::now();
    let mut init_failed = false;
    let mut finished = false;
    loop {
        // Observe.
        match rx.borrow_and_update().clone() {
            None => {
                tracing::info!("pod removed: killing its processes");
                return; // guards kill the processes
            }
            Some(p) => pod = p,
        }
        if meta::is_deleting(&pod) && !finished {
            terminate(&pod, &mut inits, &mut mains, &pod_ip, &mut rx).await;
            finished = true;
            write_status(
                &sh.store,
                &pods_info,
                &ns,
                &name,
                &uid,
                &pod,
                &host_ip,
                &pod_ip,
                &start_time,
                &inits,
                &mains,
                Some(&policy),
            );
            let opts = DeleteOptions {
                grace: Some(0),
                uid: Some(uid.clone()),
                ..DeleteOptions::default()
            };
            if let Err(e) = sh.store.delete(&pods_info, &ns, &name, &opts) {
                tracing::debug!(error = %e, "failed to complete pod deletion");
            }
        }
        if !finished {
            let ctx = PodContext {
                pod: (*pod).clone(),
                pod_ip: pod_ip.clone(),
                host_ip: host_ip.clone(),
                node: sh.node.clone(),
                dir: ctx_dir.clone(),
            };
            if planned && volumes_synced.elapsed() >= VOLUME_SYNC {
                volumes_synced = Instant::now();
                for volume in container::refresh_volumes(&sh.store, &ctx) {
                    tracing::info!(pod = %name, volume, "volume updated from its Secret/ConfigMap");
                }
            }
            if !planned {
                match container::ensure_dir(&ctx_dir)
                    .and_then(|_| container::volumes(&sh.store, &ctx))
                {
                    Ok(vols) => {
                        planned = true;
                        for rt in inits.iter_mut().chain(mains.iter_mut()) {
                            rt.mounts = container::mounts(&rt.spec, &vols);
                            rt.launch = container::plan(&sh.store, &ctx, &rt.spec, &vols);
                            if let Err(LaunchError::Config(m)) = &rt.launch {
                                planned = false;
                                tracing::debug!(container = %rt.name, message = %m, "container config not ready");
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "volumes not ready"),
                }
            }
            if planned {
                step(
                    &sh,
                    &pod,
                    &policy,
                    &pod_ip,
                    &mut inits,
                    &mut mains,
                    &mut init_failed,
                )
                .await;
            }
            write_status(
                &sh.store,
                &pods_info,
                &ns,
                &name,
                &uid,
                &pod,
                &host_ip,
                &pod_ip,
                &start_time,
                &inits,
                &mains,
                if init_failed { None } else { Some(&policy) },
            );
        }
        tokio::select! {
            res = rx.changed() => if res.is_err() { return },
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One pass: reap, restart, start, probe.
async fn step(
    sh: &Shared,
    pod: &Value,
    policy: &str,
    pod_ip: &str,
    inits: &mut [Rt],
    mains: &mut [Rt],
    init_failed: &mut bool,
) {
    let now = Instant::now();
    // Init containers run one at a time, to completion.
    for rt in inits.iter_mut() {
        if let Some(t) = rt.reap() {
            let code = t["exitCode"].as_i64().unwrap_or(1);
            if code == 0 {
                rt.terminated = Some(t);
            } else if policy == "Never" {
                rt.terminated = Some(t);
                *init_failed = true;
            } else {
                rt.last_state = Some(t);
                rt.restarts += 1;
                rt.backoff_until = Some(now + rt.backoff);
                rt.backoff = (rt.backoff * 2).min(BACKOFF_MAX);
            }
        }
        if rt.terminated.as_ref().is_some_and(|t| t["exitCode"] == 0) {
            continue;
        }
        if *init_failed {
            return;
        }
        if rt.proc.is_none() && rt.runnable() && rt.backoff_until.is_none_or(|b| now >= b) {
            rt.start(&sh.processes);
        }
        return; // later init containers and the main containers wait
    }
    for rt in mains.iter_mut() {
        if let Some(t) = rt.reap() {
            let code = t["exitCode"].as_i64().unwrap_or(1);
            tracing::info!(container = %rt.name, exit_code = code, "container exited");
            if restart_wanted(policy, code) {
                event(
                    sh,
                    pod,
                    "Warning",
                    "BackOff",
                    &format!(
                        "Back-off restarting failed container {} in pod {}",
                        rt.name,
                        meta::name(pod)
                    ),
                );
                rt.last_state = Some(t);
                rt.restarts += 1;
                rt.backoff_until = Some(now + rt.backoff);
                rt.backoff = (rt.backoff * 2).min(BACKOFF_MAX);
            } else {
                rt.terminated = Some(t);
            }
            rt.ready = false;
        }
        if rt.proc.is_none()
            && rt.terminated.is_none()
            && rt.runnable()
            && rt.backoff_until.is_none_or(|b| now >= b)
        {
            rt.start(&sh.processes);
            if rt.proc.is_some() {
                event(
                    sh,
                    pod,
                    "Normal",
                    "Started",
                    &format!("Started container {}", rt.name),
                );
            }
        }
        let Some(launch) = rt.launch.as_ref().ok().cloned() else {
            continue;
        };
        if rt.proc.is_none() {
            continue;
        }
        // Readiness: no probe means ready once running.
        match rt.spec.get("readinessProbe").cloned() {
            None => rt.ready = true,
            Some(p) if now >= rt.next_readiness => {
                let t = Timing::of(&p);
                rt.next_readiness = now + t.period;
                if probe::run(&p, &rt.spec, &launch, &rt.mounts, pod_ip, t.timeout).await {
                    rt.ready_streak = (rt.ready_streak.0 + 1, 0);
                    if rt.ready_streak.0 >= t.success {
                        rt.ready = true;
                    }
                } else {
                    rt.ready_streak = (0, rt.ready_streak.1 + 1);
                    if rt.ready_streak.1 >= t.failure {
                        if rt.ready {
                            event(
                                sh,
                                pod,
                                "Warning",
                                "Unhealthy",
                                &format!("Readiness probe failed for container {}", rt.name),
                            );
                        }
                        rt.ready = false;
                    }
                }
            }
            Some(_) => {}
        }
        if let Some(p) = rt.spec.get("livenessProbe").cloned() {
            if now >= rt.next_liveness {
                let t = Timing::of(&p);
                rt.next_liveness = now + t.period;
                if probe::run(&p, &rt.spec, &launch, &rt.mounts, pod_ip, t.timeout).await {
                    rt.live_fails = 0;
                } else {
                    rt.live_fails += 1;
                    if rt.live_fails >= t.failure {
                        tracing::info!(container = %rt.name, "liveness probe failed: killing the container");
                        event(
                            sh,
                            pod,
                            "Warning",
                            "Unhealthy",
                            &format!(
                                "Liveness probe failed; container {} will be restarted",
                                rt.name
                            ),
                        );
                        if let Some(pr) = &rt.proc {
                            signal_group(pr.pgid, Signal::SIGKILL);
                        }
                        rt.live_fails = 0;
                    }
                }
            }
        }
    }
}

fn event(sh: &Shared, pod: &Value, type_: &str, reason: &str, message: &str) {
    let mut pod = pod.clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    super::scheduler::emit_event_from(&sh.store, &pod, type_, reason, message, "kubelet");
}

/// Graceful termination: preStop hooks, SIGTERM, wait for the grace period, SIGKILL.
/// Whether a termination must end at once: the pod is gone or was re-deleted with grace 0
/// (`kubectl delete --force --grace-period=0`).
fn cut_short(rx: &watch::Receiver<Option<Arc<Value>>>) -> bool {
    match &*rx.borrow() {
        None => true,
        Some(p) => {
            p.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                == Some(0)
        }
    }
}

async fn wait_cut_short(rx: &mut watch::Receiver<Option<Arc<Value>>>) {
    while !cut_short(rx) {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn terminate(
    pod: &Value,
    inits: &mut [Rt],
    mains: &mut [Rt],
    pod_ip: &str,
    rx: &mut watch::Receiver<Option<Arc<Value>>>,
) {
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .clamp(0, MAX_GRACE_SECONDS) as u64;
    let deadline = Instant::now() + Duration::from_secs(grace);
    tracing::info!(grace, "terminating pod");
    let hooks = mains
        .iter()
        .filter(|rt| rt.proc.is_some())
        .filter_map(|rt| {
            let hook = rt.spec.pointer("/lifecycle/preStop")?.clone();
            let launch = rt.launch.as_ref().ok()?.clone();
            Some((hook, rt.spec.clone(), launch, rt.mounts.clone()))
        });
    let remaining = deadline.saturating_duration_since(Instant::now());
    let runs = hooks.map(|(hook, spec, launch, mounts)| async move {
        probe::run(
            &hook,
            &spec,
            &launch,
            &mounts,
            pod_ip,
            remaining.max(Duration::from_secs(1)),
        )
        .await
    });
    tokio::select! {
        _ = tokio::time::timeout(remaining, futures::future::join_all(runs)) => {}
        _ = wait_cut_short(rx) => {}
    }
    for rt in inits.iter().chain(mains.iter()) {
        if let Some(p) = &rt.proc {
            signal_group(p.pgid, Signal::SIGTERM);
        }
    }
    loop {
        let mut running = false;
        for rt in inits.iter_mut().chain(mains.iter_mut()) {
            if let Some(t) = rt.reap() {
                rt.terminated = Some(t);
            }
            running |= rt.proc.is_some();
        }
        if !running {
            break;
        }
        if Instant::now() >= deadline || cut_short(rx) {
            for rt in inits.iter_mut().chain(mains.iter_mut()) {
                if let Some(p) = &rt.proc {
                    signal_group(p.pgid, Signal::SIGKILL);
                }
            }
            for rt in inits.iter_mut().chain(mains.iter_mut()) {
                if let Some(mut p) = rt.proc.take() {
                    let status = p.child.wait().await;
                    if let Ok(s) = status {
                        rt.proc = Some(p);
                        let t = rt.terminated_state(s);
                        rt.proc = None;
                        rt.terminated = Some(t);
                    }
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for rt in mains.iter_mut() {
        rt.ready = false;
        rt.backoff_until = None;
    }
}

#[allow(clippy::too_many_arguments)] // a status snapshot needs all of these
fn write_status(
    store: &Store,
    pods_info: &crate::registry::ResourceInfo,
    ns: &str,
    name: &str,
    uid: &str,
    pod: &Value,
    host_ip: &str,
    pod_ip: &str,
    start_time: &str,
    inits: &[Rt],
    mains: &[Rt],
    policy: Option<&str>,
) {
    let runnable: Vec<&Rt> = mains.iter().filter(|r| r.runnable()).collect();
    let inits_done = inits
        .iter()
        .all(|r| r.terminated.as_ref().is_some_and(|t| t["exitCode"] == 0));
    let all_terminated = !runnable.is_empty() && runnable.iter().all(|r| r.terminated.is_some());
    let any_failed = runnable
        .iter()
        .any(|r| r.terminated.as_ref().is_some_and(|t| t["exitCode"] != 0));
    let phase = if policy.is_none() {
        "Failed" // an init container failed under restartPolicy Never
    } else if all_terminated {
        if any_failed {
            "Failed"
        } else {
            "Succeeded"
        }
    } else if runnable
        .iter()
        .any(|r| r.proc.is_some() || r.restarts > 0 || r.terminated.is_some())
    {
        "Running"
    } else {
        "Pending"
    };
    let ready = phase == "Running"
        && !runnable.is_empty()
        && runnable.iter().all(|r| r.ready && r.proc.is_some())
        && !meta::is_deleting(pod);
    let tf = |b: bool| if b { "True" } else { "False" };
    let mut status = json!({
        "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": start_time, "qosClass": "BestEffort",
        "conditions": pod.pointer("/status/conditions").cloned().unwrap_or_else(|| json!([])),
        "containerStatuses": mains.iter().map(Rt::status).collect::<Vec<_>>(),
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits.iter().map(Rt::status).collect::<Vec<_>>());
    }
    let mut holder = json!({"status": status});
    let now = meta::now_rfc3339();
    for (t, s) in [
        ("PodReadyToStartContainers", true),
        ("Initialized", inits_done),
        ("Ready", ready),
        ("ContainersReady", ready),
        ("PodScheduled", true),
    ] {
        let mut c = json!({"type": t, "status": tf(s), "lastTransitionTime": now});
        if !s && (t == "Ready" || t == "ContainersReady") {
            c["reason"] = json!(if phase == "Succeeded" || phase == "Failed" {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            });
        }
        set_condition(&mut holder, c);
    }
    let new_status = holder["status"].clone();
    let res = store.mutate(
        pods_info,
        ns,
        name,
        &WriteOptions::internal("kubelet"),
        |old| {
            if meta::uid(old) != uid {
                return Err(crate::error::ApiError::conflict(
                    "",
                    "pods",
                    name,
                    "pod was replaced",
                ));
            }
            let mut o = old.clone();
            // Keep lastTransitionTime of unchanged conditions relative to the stored object.
            let mut merged =
                json!({"status": old.get("status").cloned().unwrap_or_else(|| json!({}))});
            for c in new_status["conditions"].as_array().into_iter().flatten() {
                set_condition(&mut merged, c.clone());
            }
            let mut s = new_status.clone();
            s["conditions"] = merged["status"]["conditions"].clone();
            o["status"] = s;
            Ok(o)
        },
    );
    if let Err(e) = res {
        tracing::debug!(error = %e, "failed to write pod status");
    }
}
