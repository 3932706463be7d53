//! End-to-end harness: a `kredis dev` control plane (real HTTP API server, kubelets running
//! real redis-server processes) with the KRedis CRD installed, and the operator running
//! in-process against it with the real kube-rs client. Everything stops when the guard
//! drops, even when a test fails.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kredis_api::{KRedis, KRedisStatus, NodeRole, Phase};
use kredis_devkube::{DevCluster, DevClusterOptions};
use kredis_engine::admin::TlsConfig;
use kredis_operator::{OperatorConfig, RunOptions};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use redis::AsyncCommands;
use serde_json::json;

/// How long a cluster may take to become Ready in a test (creation takes about 6 s on an idle
/// machine; CI runs two tests at a time on 2 cores).
pub const READY: Duration = Duration::from_secs(120);

/// A running operator, stopped on drop.
pub struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), kredis_operator::RunError>>>,
    /// Where its HTTP API listens.
    pub http: SocketAddr,
}

impl Operator {
    /// Starts the operator against `client`.
    pub async fn start(client: kube::Client) -> Operator {
        Self::start_with(client, None).await
    }

    /// Starts an operator that reconciles only while it holds the election's Lease.
    pub async fn start_with(
        client: kube::Client,
        election: Option<kredis_operator::leader::LeaderElection>,
    ) -> Operator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP API");
        let http = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = RunOptions {
            namespace: None,
            http_addr: http,
            config: OperatorConfig {
                instance: election
                    .as_ref()
                    .map_or_else(|| "test".to_string(), |e| e.identity.clone()),
                // The dev kubelet refreshes Secret volumes every second.
                secret_volume_sync: Duration::from_secs(3),
                ..OperatorConfig::default()
            },
            leader_election: election,
        };
        let task = tokio::spawn(kredis_operator::serve(client, listener, options, async {
            let _ = stopped.await;
        }));
        Operator {
            stop: Some(stop),
            task: Some(task),
            http,
        }
    }

    /// Kills the operator at once, wherever it is (like a SIGKILLed process: no step is
    /// finished, no status written).
    pub fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Stops it gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Drop order: operator, then the control plane (and its processes), then the directory.
pub struct Harness {
    pub operator: Option<Operator>,
    pub cluster: DevCluster,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.take();
    }
}

/// Logs go to the test's captured output, which is printed only when it fails: by default the
/// engine's and operator's decisions (info), so a failure in CI shows what they did.
/// `RUST_LOG` overrides.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kredis_engine=info,kredis_operator=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A control plane with `nodes` workers, the CRD, and (when `operator`) a running operator.
pub async fn start(nodes: usize, operator: bool) -> Harness {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevClusterOptions::for_tests(dir.path());
    opts.nodes = nodes;
    let cluster = DevCluster::start(opts).await.expect("start dev cluster");
    let client = cluster.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &kredis_api::crd())
        .await
        .expect("install the CRD");
    let operator = if operator {
        Some(Operator::start(client.clone()).await)
    } else {
        None
    };
    Harness {
        operator,
        cluster,
        client,
        dir,
    }
}

impl Harness {
    pub fn kredis(&self) -> Api<KRedis> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a KRedis from a JSON spec.
    pub async fn create(&self, name: &str, spec: serde_json::Value) -> KRedis {
        let obj: KRedis = serde_json::from_value(json!({
            "apiVersion": "kredis.io/v1alpha1",
            "kind": "KRedis",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("KRedis json");
        self.kredis()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create KRedis")
    }

    /// Merge-patches a KRedis spec.
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.kredis()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .expect("patch KRedis");
    }

    /// Waits until the KRedis is Ready for its current generation; returns its status.
    pub async fn ready(&self, name: &str) -> KRedisStatus {
        self.ready_within(name, READY).await
    }

    pub async fn ready_within(&self, name: &str, timeout: Duration) -> KRedisStatus {
        let api = self.kredis();
        let mut last = None;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(k) = api.get(name).await {
                if let Some(s) = &k.status {
                    if s.phase == Some(Phase::Ready)
                        && s.observed_generation == k.metadata.generation
                    {
                        return s.clone();
                    }
                }
                last = k.status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("KRedis {name} not Ready within {timeout:?}; last status: {last:#?}");
    }

    /// The cluster's password from its Secret.
    pub async fn password(&self, name: &str) -> Option<String> {
        let k = self.kredis().get(name).await.ok()?;
        let secret = k.status?.auth_secret?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "default");
        let s = secrets.get(&secret).await.ok()?;
        let bytes = s.data?.get("password")?.0.clone();
        String::from_utf8(bytes).ok()
    }

    /// `host:port` of every master in the status.
    pub async fn masters(&self, name: &str) -> Vec<String> {
        let k = self.kredis().get(name).await.expect("get KRedis");
        k.status
            .map(|s| {
                s.nodes
                    .iter()
                    .filter(|n| n.role == Some(NodeRole::Master))
                    .filter_map(|n| Some(format!("{}:{}", n.host.as_ref()?, n.port)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the cluster's pods that exist and are not terminating.
    pub async fn pod_names(&self, name: &str) -> Vec<String> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
            .await
            .expect("list pods");
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names
    }

    /// The cluster's TLS material (CA, certificate, key) from its TLS Secret, if TLS is on.
    pub async fn tls(&self, name: &str) -> Option<TlsConfig> {
        let k = self.kredis().get(name).await.ok()?;
        let secret = k.spec.tls?.secret_name;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "default");
        let data = secrets.get(&secret).await.ok()?.data?;
        let key = |k: &str| data.get(k).map(|b| b.0.clone());
        Some(TlsConfig {
            ca_cert: key("ca.crt")?,
            client: Some((key("tls.crt")?, key("tls.key")?)),
        })
    }

    /// A redis-rs cluster client seeded from the status (over TLS when the cluster has it).
    pub async fn cluster_client(&self, name: &str) -> redis::cluster_async::ClusterConnection {
        let seeds = self.masters(name).await;
        let pw = self.password(name).await;
        let tls = self.tls(name).await;
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let urls: Vec<String> = seeds
            .iter()
            .map(|s| match &pw {
                Some(p) => format!("{scheme}://:{p}@{s}"),
                None => format!("{scheme}://{s}"),
            })
            .collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            builder = builder
                .certs(redis::TlsCertificates {
                    client_tls: tls.client.map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert,
                        client_key: key,
                    }),
                    root_cert: Some(tls.ca_cert),
                })
                // Nodes are addressed by IP; the CA is still checked.
                .danger_accept_invalid_hostnames(true);
        }
        let client = builder.build().expect("cluster client");
        client
            .get_async_connection()
            .await
            .expect("cluster connection")
    }

    /// `redis-cli --cluster check` against the first master: panics unless clean.
    pub async fn check(&self, name: &str) {
        let first = self
            .masters(name)
            .await
            .into_iter()
            .next()
            .expect("a master");
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("check").arg(&first);
        if let Some(pw) = self.password(name).await {
            cmd.env("REDISCLI_AUTH", pw);
        }
        if let Some(tls) = self.tls(name).await {
            let dir = self.dir.path().join(format!("{name}-tls"));
            std::fs::create_dir_all(&dir).expect("TLS file directory");
            let (cert, key) = tls.client.expect("a client certificate");
            for (file, pem) in [
                ("ca.crt", &tls.ca_cert),
                ("tls.crt", &cert),
                ("tls.key", &key),
            ] {
                std::fs::write(dir.join(file), pem).expect("write a TLS file");
            }
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(dir.join("ca.crt"))
                .arg("--cert")
                .arg(dir.join("tls.crt"))
                .arg("--key")
                .arg(dir.join("tls.key"));
        }
        let out = cmd.output().await.expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success()
                && text.contains("[OK] All 16384 slots covered")
                && text.contains("[OK] All nodes agree about slots configuration")
                && !text.contains("[ERR]")
                && !text.contains("[WARNING]"),
            "redis-cli --cluster check {first} is not clean:\n{text}"
        );
    }
}

/// Commands in flight at once on the (multiplexed) cluster connection.
const IN_FLIGHT: usize = 64;

/// Writes `n` keys `prefix:i` = `v:i` through the cluster client.
pub async fn write_keys(
    conn: &mut redis::cluster_async::ClusterConnection,
    prefix: &str,
    n: usize,
) {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| {
            let mut c = conn.clone();
            async move {
                c.set::<_, _, ()>(format!("{prefix}:{i}"), format!("v:{i}"))
                    .await
                    .expect("SET")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

/// Indexes of keys written by [`write_keys`] that do not read back.
pub async fn missing_keys(
    conn: &mut redis::cluster_async::ClusterConnection,
    prefix: &str,
    n: usize,
) -> Vec<usize> {
    use futures::StreamExt;
    let mut missing: Vec<usize> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = conn.clone();
            async move {
                let v: Option<String> = c.get(format!("{prefix}:{i}")).await.expect("GET");
                (v.as_deref() != Some(format!("v:{i}").as_str())).then_some(i)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    missing.sort_unstable();
    missing
}

/// How many of the acknowledged `keys` of cluster `name` no longer read back.
pub async fn lost_acked(h: &Harness, name: &str, keys: &[String]) -> usize {
    let mut conn = h.cluster_client(name).await;
    let mut lost = 0;
    for key in keys {
        let v: Option<String> = conn
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("GET {key}: {e}"));
        lost += usize::from(v.is_none());
    }
    lost
}

/// Makes sure every key written so far is on a replica too (WAIT on each master).
pub async fn replicate_all(h: &Harness, name: &str) {
    let admin = kredis_engine::admin::Admin::new(kredis_engine::admin::AdminConfig {
        credentials: kredis_engine::admin::Credentials {
            username: None,
            password: h.password(name).await,
        },
        tls: h.tls(name).await,
        // WAIT blocks up to 5 s: the client must wait longer than that for its answer (the
        // default response timeout fired on a loaded machine).
        command_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    for m in h.masters(name).await {
        let addr: kredis_engine::model::NodeAddr = m.parse().expect("host:port");
        let n: i64 = admin
            .with_node(&addr, |c| async move {
                let mut wait = redis::cmd("WAIT");
                wait.arg(1).arg(5000);
                c.raw("WAIT", wait).await
            })
            .await
            .unwrap_or_else(|e| panic!("WAIT on {m}: {e}"));
        assert!(n >= 1, "master {m} has no replica in sync");
    }
}

/// Asserts every key written by [`write_keys`] reads back.
pub async fn assert_keys(
    conn: &mut redis::cluster_async::ClusterConnection,
    prefix: &str,
    n: usize,
) {
    let missing = missing_keys(conn, prefix, n).await;
    assert!(
        missing.is_empty(),
        "{} of {n} keys lost or wrong, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// What a background writer saw.
pub struct Writes {
    /// Keys whose SET was acknowledged.
    pub acked: Vec<String>,
    /// Failed SETs or GETs.
    pub failed: usize,
    /// From the first failed SET to the first success after the last failure.
    pub window: Duration,
}

/// A running [`writer`]. [`Writer::finish`] stops it and returns what it did; dropping it
/// stops it too, so a failed assertion does not leave it logging reconnect attempts while the
/// harness tears the cluster down (the panic message drowned in them).
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Writes>>,
}

impl Writer {
    /// Stops the writer and returns its record.
    pub async fn finish(mut self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task.take().expect("a writer finishes once");
        task.await.expect("the writer task")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `w:<n>` keys, reading an earlier one back after each, as fast as one connection
/// allows until finished or dropped.
pub fn writer(conn: redis::cluster_async::ClusterConnection) -> Writer {
    writer_with_prefix(conn, "w")
}

/// [`writer`] with keys `<prefix>:<n>`.
pub fn writer_with_prefix(
    mut conn: redis::cluster_async::ClusterConnection,
    prefix: &str,
) -> Writer {
    let prefix = prefix.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let stop = flag;
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut first_fail: Option<Instant> = None;
        let mut recovered: Option<Instant> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}:{n}");
            n += 1;
            let result = async {
                conn.set::<_, _, ()>(&key, "x").await?;
                // Read an earlier acknowledged key back: reads must keep working too.
                if let Some(old) = acked.get(acked.len() / 2) {
                    let v: Option<String> = conn.get(old).await?;
                    if v.is_none() {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "acknowledged write not readable",
                        )));
                    }
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    acked.push(key);
                    if first_fail.is_some() && recovered.is_none() {
                        recovered = Some(Instant::now());
                    }
                }
                Err(_) => {
                    failed += 1;
                    first_fail.get_or_insert_with(Instant::now);
                    recovered = None;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let window = match (first_fail, recovered) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        };
        Writes {
            acked,
            failed,
            window,
        }
    });
    Writer {
        stop,
        task: Some(task),
    }
}
