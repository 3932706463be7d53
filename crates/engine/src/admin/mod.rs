//! Admin client: one redis-rs multiplexed connection per node, with connect and command
//! timeouts, optional credentials, and one typed method per command the engine sends.
//! Every method is a network call wrapped in a `tracing` span and a timeout.

mod certificate;
mod error;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo,
};
use tokio::sync::Mutex;
use tracing::{debug, instrument, Instrument};

pub use certificate::{leaf_certificate, served_certificate};
pub use error::AdminError;

use crate::model::{
    parse_cluster_nodes, NodeAddr, NodeEntry, NodeId, ReplicationInfo, Slot, SlotRange,
};

/// How long to wait for a TCP connect + AUTH. Loopback and in-cluster networks connect in
/// milliseconds; 2 s tolerates a busy node without stalling a reconcile on a dead one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The name (`CLIENT SETNAME`) of every connection the engine opens.
pub const CLIENT_NAME: &str = "kredis-engine";

/// How long an ordinary admin command may take. Admin commands are O(1) or O(nodes); a node
/// that needs longer is overloaded or paused, and the caller should treat it as unavailable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Extra time the client waits for a MIGRATE beyond the timeout passed to Redis itself, so
/// Redis reports its own IOERR before our client gives up.
const MIGRATE_CLIENT_SLACK: Duration = Duration::from_secs(2);

/// Credentials for every node of a cluster. `Debug` never prints the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// ACL user (`None`: the default user).
    pub username: Option<String>,
    /// Password (`None`: no AUTH).
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// Password-only credentials (the `default` user).
    pub fn password(password: impl Into<String>) -> Self {
        Credentials {
            username: None,
            password: Some(password.into()),
        }
    }
}

/// TLS for admin connections (PEM). The nodes' certificates are verified against `ca_cert`;
/// host names are not, as Redis Cluster itself does not: nodes are addressed by IP, and a
/// pod's IP is not known when its certificate is issued. The client certificate answers
/// Redis' `tls-auth-clients` (on by default). `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificate(s) that signed the nodes' certificates.
    pub ca_cert: Vec<u8>,
    /// Client certificate chain and its private key, if the nodes require one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_cert_bytes", &self.ca_cert.len())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// Parses the PEM material once, so a bad certificate or key is reported where it is
    /// configured rather than as a connect error on every node. The message names the part.
    pub fn check(&self) -> Result<(), String> {
        let (roots, client) = self.rustls_parts()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        if let Some((chain, key)) = client {
            // Parses the key and checks that it belongs to the certificate.
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the certificate and private key cannot be used: {e}"))?;
        }
        tls_client(&NodeAddr::new("127.0.0.1", 6379), self)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The CA certificates as a root store, and the client chain and key, parsed from PEM; the
    /// error names the part that is wrong. Shared by [`TlsConfig::check`] and the handshake
    /// of `certificate::served_certificate`.
    pub(crate) fn rustls_parts(
        &self,
    ) -> Result<(rustls::RootCertStore, Option<ClientChain>), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |pem: &[u8], what: &str| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{what} is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{what} holds no PEM certificate block"));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca_cert, "the CA certificate")? {
            roots
                .add(cert)
                .map_err(|e| format!("the CA certificate is not a usable certificate: {e}"))?;
        }
        let client = match &self.client {
            Some((cert, key)) => {
                let chain = certs(cert, "the certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| format!("the private key is not PEM: {e}"))?;
                Some((chain, key))
            }
            None => None,
        };
        Ok((roots, client))
    }
}

/// A client certificate chain and its private key, parsed.
pub(crate) type ClientChain = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A redis-rs client for `addr` over TLS with `tls`' CA and client certificate.
fn tls_client(addr: &NodeAddr, tls: &TlsConfig) -> redis::RedisResult<redis::Client> {
    // rustls needs a process-wide crypto provider; ring unless the process chose one (an
    // error here only means one is installed already).
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let certs = redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: Some(tls.ca_cert.clone()),
    };
    let addr = ConnectionAddr::TcpTls {
        host: addr.host.clone(),
        port: addr.port,
        insecure: false,
        tls_params: None,
    };
    let built = redis::Client::build_with_tls(addr, certs)?;
    let info = built.get_connection_info();
    let mut addr = info.addr().clone();
    addr.set_danger_accept_invalid_hostnames(true);
    redis::Client::open(info.clone().set_addr(addr))
}

/// Settings shared by every connection of an [`Admin`].
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Credentials sent as AUTH, and passed to MIGRATE.
    pub credentials: Credentials,
    /// TLS (`None`: plain TCP). MIGRATE needs nothing more: a node with `tls-cluster yes`
    /// opens its MIGRATE connections over TLS itself.
    pub tls: Option<TlsConfig>,
    /// TCP connect + handshake bound.
    pub connect_timeout: Duration,
    /// Per-command bound.
    pub command_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            credentials: Credentials::default(),
            tls: None,
            connect_timeout: CONNECT_TIMEOUT,
            command_timeout: COMMAND_TIMEOUT,
        }
    }
}

/// `CLUSTER FAILOVER` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailoverMode {
    /// Coordinated with the master: pauses its writes and waits for the offsets to match.
    Graceful,
    /// Without the master (it is unreachable) but with a majority vote of the masters.
    Force,
    /// Without any vote: only when the masters' majority is lost (PITFALLS 15).
    Takeover,
}

/// Result of one MIGRATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateOutcome {
    /// Every key moved.
    Ok,
    /// None of the keys existed any more.
    NoKey,
}

/// Facts from `CLUSTER INFO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// `cluster_state:ok`.
    pub state_ok: bool,
    /// `cluster_current_epoch`.
    pub current_epoch: u64,
    /// `cluster_my_epoch`.
    pub my_epoch: u64,
    /// `cluster_known_nodes`.
    pub known_nodes: u64,
}

/// A connection to one node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NodeClient {
    addr: NodeAddr,
    conn: MultiplexedConnection,
    config: Arc<AdminConfig>,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .finish()
    }
}

impl NodeClient {
    /// Connects (and authenticates) within the connect timeout.
    #[instrument(level = "debug", skip(config), fields(node = %addr))]
    pub async fn connect(addr: &NodeAddr, config: Arc<AdminConfig>) -> Result<Self, AdminError> {
        let conn = open_connection(addr, &config).await?;
        Ok(NodeClient {
            addr: addr.clone(),
            conn,
            config,
        })
    }

    /// The node's address.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    async fn run<T: FromRedisValue>(&self, op: &'static str, cmd: Cmd) -> Result<T, AdminError> {
        self.run_for(op, cmd, self.config.command_timeout).await
    }

    async fn run_for<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: Cmd,
        budget: Duration,
    ) -> Result<T, AdminError> {
        let span = tracing::debug_span!("redis", node = %self.addr, op);
        async {
            let mut conn = self.conn.clone();
            match tokio::time::timeout(budget, cmd.query_async::<T>(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(source)) => Err(AdminError::command(&self.addr, op, source)),
                Err(_) => Err(AdminError::Timeout {
                    addr: self.addr.clone(),
                    op,
                    after: budget,
                }),
            }
        }
        .instrument(span)
        .await
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), AdminError> {
        self.run::<String>("PING", redis::cmd("PING"))
            .await
            .map(drop)
    }

    /// `CLUSTER NODES`, parsed.
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeEntry>, AdminError> {
        let text: String = self.run("CLUSTER NODES", cluster(&["NODES"])).await?;
        parse_cluster_nodes(&text).map_err(|source| AdminError::Parse {
            addr: self.addr.clone(),
            op: "CLUSTER NODES",
            source,
        })
    }

    /// `CLUSTER MYID`.
    pub async fn myid(&self) -> Result<NodeId, AdminError> {
        let text: String = self.run("CLUSTER MYID", cluster(&["MYID"])).await?;
        NodeId::parse(text.trim()).map_err(|source| AdminError::Parse {
            addr: self.addr.clone(),
            op: "CLUSTER MYID",
            source,
        })
    }

    /// `CLUSTER INFO`, the fields the engine reads.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, AdminError> {
        let text: String = self.run("CLUSTER INFO", cluster(&["INFO"])).await?;
        let mut info = ClusterInfo::default();
        for (k, v) in info_fields(&text) {
            match k {
                "cluster_state" => info.state_ok = v == "ok",
                "cluster_current_epoch" => info.current_epoch = v.parse().unwrap_or(0),
                "cluster_my_epoch" => info.my_epoch = v.parse().unwrap_or(0),
                "cluster_known_nodes" => info.known_nodes = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(info)
    }

    /// `DBSIZE`.
    pub async fn dbsize(&self) -> Result<u64, AdminError> {
        self.run("DBSIZE", redis::cmd("DBSIZE")).await
    }

    /// `INFO replication`, the fields the engine reads.
    pub async fn info_replication(&self) -> Result<ReplicationInfo, AdminError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let text: String = self.run("INFO replication", cmd).await?;
        let mut info = ReplicationInfo::default();
        let mut master_offset = 0;
        let mut replica_offset = 0;
        for (k, v) in info_fields(&text) {
            match k {
                "role" => info.is_replica = v == "slave",
                "master_link_status" => info.master_link_up = v == "up",
                "master_sync_in_progress" => info.sync_in_progress = v == "1",
                "slave_repl_offset" => replica_offset = v.parse().unwrap_or(0),
                "master_repl_offset" => master_offset = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        info.offset = if info.is_replica {
            replica_offset
        } else {
            master_offset
        };
        Ok(info)
    }

    /// `CLUSTER MEET host port bus-port`.
    pub async fn meet(&self, peer: &NodeAddr, bus_port: u16) -> Result<(), AdminError> {
        let mut cmd = cluster(&["MEET"]);
        cmd.arg(&peer.host).arg(peer.port).arg(bus_port);
        self.ok("CLUSTER MEET", cmd).await
    }

    /// `CLUSTER ADDSLOTSRANGE`.
    pub async fn add_slots(&self, ranges: &[SlotRange]) -> Result<(), AdminError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let mut cmd = cluster(&["ADDSLOTSRANGE"]);
        for r in ranges {
            cmd.arg(r.start().get()).arg(r.end().get());
        }
        self.ok("CLUSTER ADDSLOTSRANGE", cmd).await
    }

    /// `CLUSTER DELSLOTSRANGE`.
    pub async fn del_slots(&self, ranges: &[SlotRange]) -> Result<(), AdminError> {
        if ranges.is_empty() {
            return Ok(());
        }
        let mut cmd = cluster(&["DELSLOTSRANGE"]);
        for r in ranges {
            cmd.arg(r.start().get()).arg(r.end().get());
        }
        self.ok("CLUSTER DELSLOTSRANGE", cmd).await
    }

    /// `CLUSTER REPLICATE master-id` (always with an explicit id: PITFALLS 7).
    pub async fn replicate(&self, master: &NodeId) -> Result<(), AdminError> {
        let mut cmd = cluster(&["REPLICATE"]);
        cmd.arg(master.as_str());
        self.ok("CLUSTER REPLICATE", cmd).await
    }

    /// `CLUSTER SETSLOT slot IMPORTING source`.
    pub async fn setslot_importing(&self, slot: Slot, source: &NodeId) -> Result<(), AdminError> {
        self.setslot("CLUSTER SETSLOT IMPORTING", slot, "IMPORTING", Some(source))
            .await
    }

    /// `CLUSTER SETSLOT slot MIGRATING target`.
    pub async fn setslot_migrating(&self, slot: Slot, target: &NodeId) -> Result<(), AdminError> {
        self.setslot("CLUSTER SETSLOT MIGRATING", slot, "MIGRATING", Some(target))
            .await
    }

    /// `CLUSTER SETSLOT slot NODE owner`.
    pub async fn setslot_node(&self, slot: Slot, owner: &NodeId) -> Result<(), AdminError> {
        self.setslot("CLUSTER SETSLOT NODE", slot, "NODE", Some(owner))
            .await
    }

    /// `CLUSTER SETSLOT slot STABLE`.
    pub async fn setslot_stable(&self, slot: Slot) -> Result<(), AdminError> {
        self.setslot("CLUSTER SETSLOT STABLE", slot, "STABLE", None)
            .await
    }

    async fn setslot(
        &self,
        op: &'static str,
        slot: Slot,
        sub: &str,
        id: Option<&NodeId>,
    ) -> Result<(), AdminError> {
        let mut cmd = cluster(&["SETSLOT"]);
        cmd.arg(slot.get()).arg(sub);
        if let Some(id) = id {
            cmd.arg(id.as_str());
        }
        self.ok(op, cmd).await
    }

    /// `CLUSTER GETKEYSINSLOT slot count`.
    pub async fn keys_in_slot(&self, slot: Slot, count: usize) -> Result<Vec<Vec<u8>>, AdminError> {
        let mut cmd = cluster(&["GETKEYSINSLOT"]);
        cmd.arg(slot.get()).arg(count);
        self.run("CLUSTER GETKEYSINSLOT", cmd).await
    }

    /// `CLUSTER COUNTKEYSINSLOT slot`.
    pub async fn count_keys_in_slot(&self, slot: Slot) -> Result<u64, AdminError> {
        let mut cmd = cluster(&["COUNTKEYSINSLOT"]);
        cmd.arg(slot.get());
        self.run("CLUSTER COUNTKEYSINSLOT", cmd).await
    }

    /// `MIGRATE host port "" 0 timeout [REPLACE] [AUTH|AUTH2 ...] KEYS k...`: moves keys to
    /// `target`, authenticating with this admin's credentials.
    pub async fn migrate(
        &self,
        target: &NodeAddr,
        keys: &[Vec<u8>],
        timeout: Duration,
        replace: bool,
    ) -> Result<MigrateOutcome, AdminError> {
        if keys.is_empty() {
            return Ok(MigrateOutcome::NoKey);
        }
        let mut cmd = redis::cmd("MIGRATE");
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        cmd.arg(&target.host)
            .arg(target.port)
            .arg("")
            .arg(0)
            .arg(timeout_ms);
        if replace {
            cmd.arg("REPLACE");
        }
        let creds = &self.config.credentials;
        match (&creds.username, &creds.password) {
            (Some(user), Some(pw)) => {
                cmd.arg("AUTH2").arg(user).arg(pw);
            }
            (None, Some(pw)) => {
                cmd.arg("AUTH").arg(pw);
            }
            _ => {}
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(k.as_slice());
        }
        let reply: String = self
            .run_for("MIGRATE", cmd, timeout + MIGRATE_CLIENT_SLACK)
            .await?;
        Ok(if reply == "NOKEY" {
            MigrateOutcome::NoKey
        } else {
            MigrateOutcome::Ok
        })
    }

    /// `CLUSTER FORGET id`.
    pub async fn forget(&self, id: &NodeId) -> Result<(), AdminError> {
        let mut cmd = cluster(&["FORGET"]);
        cmd.arg(id.as_str());
        self.ok("CLUSTER FORGET", cmd).await
    }

    /// `CLUSTER FAILOVER [FORCE|TAKEOVER]`: only schedules the failover (PITFALLS 9).
    pub async fn failover(&self, mode: FailoverMode) -> Result<(), AdminError> {
        let mut cmd = cluster(&["FAILOVER"]);
        match mode {
            FailoverMode::Graceful => {}
            FailoverMode::Force => {
                cmd.arg("FORCE");
            }
            FailoverMode::Takeover => {
                cmd.arg("TAKEOVER");
            }
        }
        self.ok("CLUSTER FAILOVER", cmd).await
    }

    /// `CLUSTER RESET SOFT|HARD`. The caller guarantees the node holds no unique data
    /// (PITFALLS 5); a master with keys refuses anyway.
    pub async fn reset(&self, hard: bool) -> Result<(), AdminError> {
        let cmd = cluster(&["RESET", if hard { "HARD" } else { "SOFT" }]);
        self.ok("CLUSTER RESET", cmd).await
    }

    /// `CLUSTER SET-CONFIG-EPOCH epoch` (only on a node that knows only itself, epoch 0).
    pub async fn set_config_epoch(&self, epoch: u64) -> Result<(), AdminError> {
        let mut cmd = cluster(&["SET-CONFIG-EPOCH"]);
        cmd.arg(epoch);
        self.ok("CLUSTER SET-CONFIG-EPOCH", cmd).await
    }

    /// `CLUSTER BUMPEPOCH`: raises this node's config epoch above every other (PITFALLS 6).
    pub async fn bump_epoch(&self) -> Result<(), AdminError> {
        self.run::<String>("CLUSTER BUMPEPOCH", cluster(&["BUMPEPOCH"]))
            .await
            .map(drop)
    }

    /// `CONFIG SET key value`.
    pub async fn config_set(&self, key: &str, value: &str) -> Result<(), AdminError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(key).arg(value);
        self.ok("CONFIG SET", cmd).await
    }

    /// `ROLE`: `master`, `slave` or `sentinel`.
    pub async fn role(&self) -> Result<String, AdminError> {
        let reply: redis::Value = self.run("ROLE", redis::cmd("ROLE")).await?;
        let role = match reply {
            redis::Value::Array(items) => items.into_iter().next(),
            _ => None,
        };
        match role {
            Some(v) => String::from_redis_value(v).map_err(|e| AdminError::Protocol {
                addr: self.addr.clone(),
                op: "ROLE",
                detail: e.to_string(),
            }),
            None => Err(AdminError::Protocol {
                addr: self.addr.clone(),
                op: "ROLE",
                detail: "empty reply".into(),
            }),
        }
    }

    /// Runs an arbitrary command (used by repair for key-level reads such as `EXISTS`).
    pub async fn raw<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: Cmd,
    ) -> Result<T, AdminError> {
        self.run(op, cmd).await
    }

    async fn ok(&self, op: &'static str, cmd: Cmd) -> Result<(), AdminError> {
        self.run::<redis::Value>(op, cmd).await.map(drop)
    }
}

/// Opens a multiplexed connection to `addr` and authenticates, within the connect timeout.
/// Responses carry no timeout of their own: callers bound each command (see `run_for`).
pub(crate) async fn open_connection(
    addr: &NodeAddr,
    config: &AdminConfig,
) -> Result<MultiplexedConnection, AdminError> {
    let mut redis_info = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(user) = &config.credentials.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(pw) = &config.credentials.password {
        redis_info = redis_info.set_password(pw);
    }
    let client = match &config.tls {
        None => ConnectionAddr::Tcp(addr.host.clone(), addr.port)
            .into_connection_info()
            .and_then(|info| redis::Client::open(info.set_redis_settings(redis_info))),
        Some(tls) => tls_client(addr, tls).and_then(|c| {
            redis::Client::open(
                c.get_connection_info()
                    .clone()
                    .set_redis_settings(redis_info),
            )
        }),
    }
    .map_err(|source| AdminError::connect(addr, source))?;
    let conn_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(None);
    let fut = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&conn_config)
            .await?;
        // Named, so a node can tell the engine's connections from its clients'
        // (`membership::detach` waits for clients only). Best effort: a node that refuses
        // the name is still usable.
        let mut name = redis::cmd("CLIENT");
        name.arg("SETNAME").arg(CLIENT_NAME);
        if let Err(e) = name.query_async::<()>(&mut conn).await {
            debug!(node = %addr, error = %e, "failed to name the admin connection");
        }
        Ok(conn)
    };
    match tokio::time::timeout(config.connect_timeout, fut).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(AdminError::connect(addr, source)),
        Err(_) => Err(AdminError::Timeout {
            addr: addr.clone(),
            op: "connect",
            after: config.connect_timeout,
        }),
    }
}

/// `CLUSTER <args...>`.
pub(crate) fn cluster(args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    for a in args {
        cmd.arg(*a);
    }
    cmd
}

fn info_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.trim().split_once(':'))
}

/// A pool of node connections sharing one [`AdminConfig`]. Connections are made on first use
/// and dropped after a connection-level error so the next call reconnects.
#[derive(Clone, Debug)]
pub struct Admin {
    config: Arc<AdminConfig>,
    clients: Arc<Mutex<HashMap<NodeAddr, NodeClient>>>,
}

impl Admin {
    /// A pool with these settings.
    pub fn new(config: AdminConfig) -> Self {
        Admin {
            config: Arc::new(config),
            clients: Arc::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AdminConfig {
        &self.config
    }

    /// A client for `addr`, connecting if needed.
    pub async fn node(&self, addr: &NodeAddr) -> Result<NodeClient, AdminError> {
        if let Some(c) = self.clients.lock().await.get(addr) {
            return Ok(c.clone());
        }
        let client = NodeClient::connect(addr, self.config.clone()).await?;
        self.clients
            .lock()
            .await
            .insert(addr.clone(), client.clone());
        Ok(client)
    }

    /// Forgets the cached connection to `addr` (after an I/O error, or when the node moved).
    pub async fn drop_node(&self, addr: &NodeAddr) {
        if self.clients.lock().await.remove(addr).is_some() {
            debug!(node = %addr, "dropped cached connection");
        }
    }

    /// Runs `f` against the node at `addr`; a connection-level failure drops the cached
    /// connection so the next call reconnects.
    pub async fn with_node<T, F, Fut>(&self, addr: &NodeAddr, f: F) -> Result<T, AdminError>
    where
        F: FnOnce(NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, AdminError>>,
    {
        let client = self.node(addr).await?;
        let result = f(client).await;
        if let Err(e) = &result {
            if e.is_connection_error() {
                self.drop_node(addr).await;
            }
        }
        result
    }
}
