//! The operator's read-only HTTP API (DESIGN.md "The HTTP API") against a Ready 3x1 cluster
//! on `kredis dev`: cluster list, nodes with role filters and the text/plain seed list, errors
//! as JSON, methods, health, metrics, no password in any body; then real clients seeded only
//! from the seed list (a redis-rs cluster client and `redis-cli -c`).
//!
//! HTTP is spoken by hand (HTTP/1.1 GET, `Connection: close`) so the test adds no client
//! dependency and sees the exact status line, headers and body.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{assert_keys, eventually, start, write_keys, READY};
use kredis_operator::http::{ClusterSummary, Nodes};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest one HTTP exchange with the in-process API may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const NAME: &str = "web";

/// One HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error body with an `error` message.
    fn assert_json_error(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{self:?}"
        );
        let v = self.json();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "no error message: {v}"
        );
    }
}

/// Sends `method path` with an optional Accept header and reads the whole response.
async fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Response {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no response within {HTTP_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse(&raw).unwrap_or_else(|| panic!("{method} {path}: malformed response {raw:?}"))
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn slot_count(slots: &[[i32; 2]]) -> i32 {
    slots.iter().map(|[a, b]| b - a + 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_serves_addresses_and_clients_connect_from_them() {
    let started = Instant::now();
    let h = start(3, true).await;
    let addr = h.operator.as_ref().expect("operator").http;
    h.create(
        NAME,
        json!({"masters": 3, "replicasPerMaster": 1, "basePort": 12000}),
    )
    .await;
    let status = h.ready(NAME).await;
    let password = h.password(NAME).await.expect("auth is on by default");
    let mut bodies: Vec<(String, String)> = Vec::new();
    eprintln!("Ready after {:?}", started.elapsed());

    // The API reads the operator's watch cache, which may trail the status just read.
    let list = eventually(
        "GET /v1/clusters to show the cluster Ready",
        READY,
        || async {
            let r = http(addr, "GET", "/v1/clusters", None).await;
            let list: Vec<ClusterSummary> = serde_json::from_str(&r.body).ok()?;
            list.iter()
                .any(|c| c.name == NAME && c.phase == Some(kredis_api::Phase::Ready))
                .then_some(r)
        },
    )
    .await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        json!([{"namespace": "default", "name": NAME, "phase": "Ready", "masters": 3, "replicasPerMaster": 1, "tls": false}])
    );
    bodies.push(("/v1/clusters".into(), list.body.clone()));

    // Nodes: 3 masters with every slot once, 3 replicas of those masters.
    let path = format!("/v1/namespaces/default/clusters/{NAME}/nodes");
    let r = http(addr, "GET", &path, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let nodes: Nodes = serde_json::from_str(&r.body).expect("nodes JSON");
    bodies.push((path.clone(), r.body.clone()));
    assert_eq!(nodes.masters.len(), 3, "{nodes:#?}");
    assert_eq!(nodes.replicas.len(), 3, "{nodes:#?}");
    let total: i32 = nodes.masters.iter().map(|m| slot_count(&m.slots)).sum();
    assert_eq!(total, 16384, "{nodes:#?}");
    let mut covered = BTreeSet::new();
    for m in &nodes.masters {
        for [a, b] in &m.slots {
            for s in *a..=*b {
                assert!(covered.insert(s), "slot {s} served twice: {nodes:#?}");
            }
        }
    }
    let master_ids: BTreeSet<&str> = nodes.masters.iter().map(|m| m.node_id.as_str()).collect();
    assert_eq!(master_ids.len(), 3);
    let mut replicas_of = BTreeSet::new();
    for rep in &nodes.replicas {
        let m = rep
            .master_id
            .as_deref()
            .expect("a replica names its master");
        assert!(
            master_ids.contains(m),
            "replica {} of unknown master {m}",
            rep.pod
        );
        replicas_of.insert(m);
    }
    assert_eq!(replicas_of, master_ids, "every master has its replica");
    // The same nodes as the status.
    let from_status: BTreeSet<(String, String, i32)> = status
        .nodes
        .iter()
        .map(|n| (n.pod.clone(), n.host.clone().unwrap_or_default(), n.port))
        .collect();
    let from_api: BTreeSet<(String, String, i32)> = nodes
        .masters
        .iter()
        .map(|m| (m.pod.clone(), m.host.clone(), m.port))
        .chain(
            nodes
                .replicas
                .iter()
                .map(|r| (r.pod.clone(), r.host.clone(), r.port)),
        )
        .collect();
    assert_eq!(from_api, from_status);

    // Role filters.
    let r = http(addr, "GET", &format!("{path}?role=master"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let only: Nodes = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(only.masters, nodes.masters);
    assert!(only.replicas.is_empty(), "{only:#?}");
    bodies.push((format!("{path}?role=master"), r.body));
    let r = http(addr, "GET", &format!("{path}?role=replica"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let only: Nodes = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(only.replicas, nodes.replicas);
    assert!(only.masters.is_empty(), "{only:#?}");
    bodies.push((format!("{path}?role=replica"), r.body));
    for query in ["role=bogus", "role=", "role=master&role=replica"] {
        let r = http(addr, "GET", &format!("{path}?{query}"), None).await;
        r.assert_json_error(400);
        bodies.push((format!("{path}?{query}"), r.body));
    }

    // text/plain: a seed list, masters first.
    let r = http(addr, "GET", &path, Some("text/plain")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{r:?}"
    );
    let seeds: Vec<String> = r.body.trim().split(',').map(str::to_owned).collect();
    bodies.push((format!("{path} (text/plain)"), r.body.clone()));
    let addr_of = |host: &str, port: i32| format!("{host}:{port}");
    let want_masters: BTreeSet<String> = nodes
        .masters
        .iter()
        .map(|m| addr_of(&m.host, m.port))
        .collect();
    let want_replicas: BTreeSet<String> = nodes
        .replicas
        .iter()
        .map(|m| addr_of(&m.host, m.port))
        .collect();
    assert_eq!(seeds.len(), 6, "{seeds:?}");
    assert_eq!(
        seeds[..3].iter().cloned().collect::<BTreeSet<_>>(),
        want_masters,
        "masters first: {seeds:?}"
    );
    assert_eq!(
        seeds[3..].iter().cloned().collect::<BTreeSet<_>>(),
        want_replicas,
        "{seeds:?}"
    );
    let r = http(
        addr,
        "GET",
        &format!("{path}?role=master"),
        Some("text/plain"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body
            .trim()
            .split(',')
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        want_masters
    );

    // Unknown cluster, unknown namespace, unknown path: 404 with a JSON error.
    for p in [
        "/v1/namespaces/default/clusters/nope/nodes".to_string(),
        format!("/v1/namespaces/elsewhere/clusters/{NAME}/nodes"),
        "/v2/clusters".to_string(),
        "/v1/namespaces/default/clusters".to_string(),
    ] {
        let r = http(addr, "GET", &p, None).await;
        r.assert_json_error(404);
        bodies.push((p, r.body));
    }
    // Read-only: other methods on known routes are 405.
    for (method, p) in [
        ("POST", "/v1/clusters".to_string()),
        ("DELETE", path.clone()),
        ("PUT", path.clone()),
        ("POST", "/metrics".to_string()),
    ] {
        let r = http(addr, method, &p, None).await;
        assert_eq!(r.status, 405, "{method} {p}: {r:?}");
        bodies.push((format!("{method} {p}"), r.body));
    }

    // Health.
    for p in ["/healthz", "/readyz"] {
        let r = http(addr, "GET", p, None).await;
        assert_eq!(r.status, 200, "{p}: {r:?}");
        bodies.push((p.into(), r.body));
    }

    // Metrics: the gauge is written with the status, so it may lag it by a reconcile.
    let slots_line =
        format!("kredis_cluster_slots_assigned{{namespace=\"default\",name=\"{NAME}\"}} 16384");
    let r = eventually("the slots gauge at 16384", READY, || async {
        let r = http(addr, "GET", "/metrics", None).await;
        (r.status == 200 && r.body.lines().any(|l| l == slots_line)).then_some(r)
    })
    .await;
    assert!(
        r.body
            .lines()
            .any(|l| l.starts_with("kredis_reconcile_runs_total ")),
        "{}",
        r.body
    );
    bodies.push(("/metrics".into(), r.body));

    // The password is served to nobody.
    for (what, body) in &bodies {
        assert!(!body.contains(&password), "{what} leaks the password");
    }

    // A redis-rs cluster client seeded only from the text/plain list.
    let urls: Vec<String> = seeds
        .iter()
        .map(|s| format!("redis://:{password}@{s}"))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .build()
        .expect("cluster client");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("cluster connection from the seed list");
    write_keys(&mut conn, "api", 200).await;
    assert_keys(&mut conn, "api", 200).await;

    // redis-cli -c through a redirect: a key whose slot the first seed does not serve.
    let seed = &seeds[0];
    let (host, port) = seed.rsplit_once(':').expect("host:port");
    let first = nodes
        .masters
        .iter()
        .find(|m| addr_of(&m.host, m.port) == *seed)
        .expect("the first seed is a master");
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(["-h", host, "-p", port]).args(args);
        cmd.env("REDISCLI_AUTH", &password);
        cmd
    };
    let mut key = None;
    for i in 0..100 {
        let k = format!("elsewhere-{i}");
        let out = cli(&["CLUSTER", "KEYSLOT", &k])
            .output()
            .await
            .expect("redis-cli");
        let slot: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a slot number");
        if !first.slots.iter().any(|[a, b]| (*a..=*b).contains(&slot)) {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("a key served by another master");
    let out = cli(&["GET", &key]).output().await.expect("redis-cli");
    // redis-cli prints error replies on stdout or stderr depending on its version.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("MOVED"),
        "without -c, GET {key} is redirected: {text}"
    );
    let out = cli(&["-c", "SET", &key, "through-a-redirect"])
        .output()
        .await
        .expect("redis-cli");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "OK",
        "SET: {out:?}"
    );
    let out = cli(&["-c", "GET", &key]).output().await.expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through-a-redirect",
        "GET: {out:?}"
    );
    let v: Option<String> = redis::AsyncCommands::get(&mut conn, &key)
        .await
        .expect("GET");
    assert_eq!(v.as_deref(), Some("through-a-redirect"));

    // redis-py's RedisCluster with replica reads, seeded only from the list: every read of a
    // key it wrote answers, and the replicas served some of them.
    let script = r#"
import sys
from redis.cluster import RedisCluster, ClusterNode
seeds, password = sys.argv[1].split(","), sys.argv[2]
nodes = [ClusterNode(h, int(p)) for h, p in (s.rsplit(":", 1) for s in seeds)]
rc = RedisCluster(startup_nodes=nodes, password=password, read_from_replicas=True)
for i in range(300):
    rc.set(f"py:{i}", str(i))
bad = [i for i in range(300) for _ in range(3) if rc.get(f"py:{i}") != str(i).encode()]
served = {n.name for n in rc.get_nodes() if n.server_type == "replica"}
print("OK" if not bad else f"BAD {bad[:5]}")
print(sorted(served), file=sys.stderr)
"#;
    let replica_gets = |c: redis::aio::MultiplexedConnection| async move {
        let mut c = c;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut replica_conns = Vec::new();
    for r in &want_replicas {
        let c = redis::Client::open(format!("redis://:{password}@{r}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("replica connection");
        replica_conns.push(c);
    }
    let mut before = 0;
    for c in &replica_conns {
        before += replica_gets(c.clone()).await;
    }
    // Replicas may still be syncing the keys just written: wait for offsets to match.
    for m in &want_masters {
        // WAIT may block 5 s: answer time must be longer than that.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        let mut c = redis::Client::open(format!("redis://:{password}@{m}"))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("master connection");
        let _: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut c)
            .await
            .expect("WAIT");
    }
    // Redis 7 leaves a replica out of CLUSTER SLOTS until its master has heard (by gossip) a
    // non-zero replication offset from it, so a client would not see replicas yet.
    let seed_conn = redis::Client::open(format!("redis://:{password}@{}", seeds[0]))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("seed connection");
    common::eventually("replicas in CLUSTER SLOTS", Duration::from_secs(30), || {
        let mut c = seed_conn.clone();
        async move {
            let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut c)
                .await
                .ok()?;
            // start, end, master, then one entry per replica.
            slots.iter().all(|r| r.len() > 3).then_some(())
        }
    })
    .await;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &seeds.join(","), &password])
        .output()
        .await
        .expect("python3 (scripts/install-deps.sh installs redis-py)");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim() == "OK",
        "redis-py RedisCluster: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut after = 0;
    for c in &replica_conns {
        after += replica_gets(c.clone()).await;
    }
    assert!(
        after > before,
        "no read went to a replica ({before} -> {after} GETs); redis-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "redis-py read_from_replicas: {} GETs served by replicas",
        after - before
    );

    eprintln!(
        "http_api_serves_addresses_and_clients_connect_from_them: {:?}",
        started.elapsed()
    );
}
