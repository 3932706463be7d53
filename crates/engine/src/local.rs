//! Local redis-server processes for `kredis local`, tests and benchmarks: each node in its own
//! temporary directory, on a free loopback port, killed when dropped (even on panic).
//! Touches the network (loopback only) and spawns processes.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::process::{Child, Command};

use crate::admin::{AdminConfig, Credentials, NodeClient, TlsConfig};
use crate::model::NodeAddr;

/// How long a freshly spawned redis-server may take to answer PING. It starts in
/// milliseconds; 10 s allows for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Offset of the cluster bus port from the client port (Redis's fixed default).
pub const BUS_PORT_OFFSET: u16 = 10000;

/// Failures starting or stopping a local node.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// redis-server could not be spawned.
    #[error("failed to start redis-server on port {port} (is redis-server installed?)")]
    Spawn {
        /// Port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The process started but never answered.
    #[error("redis-server on port {port} did not answer (gave up after {after:?}); log: {log}")]
    NotReady {
        /// Port.
        port: u16,
        /// Bound.
        after: Duration,
        /// Tail of its log file.
        log: String,
    },
    /// A temporary directory could not be created.
    #[error("failed to create a directory for a local node")]
    Dir(#[source] std::io::Error),
    /// No free port pair found.
    #[error("failed to find a free port pair (port and port+10000) on 127.0.0.1")]
    NoPort,
}

/// A throwaway CA and one certificate it signed (for `names`, such as `127.0.0.1` and
/// `localhost`), as a [`TlsConfig`] whose client certificate is also the nodes' own: what TLS
/// tests and local clusters need, and what a `kubernetes.io/tls` Secret from cert-manager
/// holds (`ca.crt`, `tls.crt`, `tls.key`). ECDSA P-256, with rcgen's default validity.
pub fn throwaway_tls(names: &[&str]) -> Result<TlsConfig, rcgen::Error> {
    ThrowawayCa::new()?.issue(names)
}

/// A throwaway CA that issues as many node certificates as a test needs (a renewal is a
/// second certificate from the same CA; a CA change, one from another CA).
pub struct ThrowawayCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl ThrowawayCa {
    /// A new self-signed CA (ECDSA P-256).
    pub fn new() -> Result<Self, rcgen::Error> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: OpenSSL finds an issuer by name, and two CAs of one name in a
        // bundle (a CA change) would make it check a certificate against the wrong one.
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("kredis throwaway CA {:016x}", rand::random::<u64>()),
        );
        Ok(ThrowawayCa {
            issuer: CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?,
        })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A fresh key and certificate for `names`, with this CA as the trust anchor.
    pub fn issue(&self, names: &[&str]) -> Result<TlsConfig, rcgen::Error> {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut node =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        node.distinguished_name
            .push(DnType::CommonName, "kredis node");
        // Names the issuing key too, as cert-manager's certificates do.
        node.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = node.signed_by(&key, &self.issuer)?;
        Ok(TlsConfig {
            ca_cert: self.pem(),
            client: Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
        })
    }
}

/// Settings for a local node.
#[derive(Clone, Debug)]
pub struct LocalNodeConfig {
    /// Password for requirepass and masterauth.
    pub password: Option<String>,
    /// `cluster-node-timeout` in milliseconds.
    pub node_timeout_ms: u64,
    /// Whether to start with `cluster-enabled yes` (tests of bad input turn it off).
    pub cluster_enabled: bool,
    /// TLS only (`port 0`, `tls-port`, `tls-cluster yes`, `tls-replication yes`): the
    /// client certificate and key of `tls` are also the node's own, as in a kredis pod.
    pub tls: Option<TlsConfig>,
    /// Extra `--directive value` pairs.
    pub extra: Vec<(String, String)>,
}

impl Default for LocalNodeConfig {
    fn default() -> Self {
        LocalNodeConfig {
            password: None,
            node_timeout_ms: 3000,
            cluster_enabled: true,
            tls: None,
            extra: Vec::new(),
        }
    }
}

/// A redis-server process on 127.0.0.1. Killed on drop.
#[derive(Debug)]
pub struct LocalNode {
    addr: NodeAddr,
    dir: PathBuf,
    _tmp: Option<Arc<tempfile::TempDir>>,
    child: Option<Child>,
    config: LocalNodeConfig,
}

fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Mutex::default)
}

/// Picks a port `p` such that `p` and `p + 10000` are free on 127.0.0.1 and not handed out
/// before by this process. Ports come from 10000..22000 so the bus port (at most 31999) stays
/// below the ephemeral range Linux uses for outgoing connections (32768 and up): a port free
/// when checked can still be taken by another process before redis-server binds it, which
/// [`LocalNode::start`] survives by trying another.
pub fn free_port_pair() -> Result<u16, LocalError> {
    let mut rng = rand::rng();
    for _ in 0..500 {
        let port: u16 = rng.random_range(10000..22000);
        let Ok(mut reserved) = reserved_ports().lock() else {
            return Err(LocalError::NoPort);
        };
        if reserved.contains(&port) {
            continue;
        }
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + BUS_PORT_OFFSET) {
            reserved.insert(port);
            return Ok(port);
        }
    }
    Err(LocalError::NoPort)
}

impl LocalNode {
    /// Starts a node on a free port in a new temporary directory.
    pub async fn start(config: LocalNodeConfig) -> Result<Self, LocalError> {
        let tmp = tempfile::Builder::new()
            .prefix("kredis-node-")
            .tempdir()
            .map_err(LocalError::Dir)?;
        let mut node = LocalNode {
            addr: NodeAddr::new("127.0.0.1", 0),
            dir: tmp.path().to_path_buf(),
            _tmp: Some(Arc::new(tmp)),
            child: None,
            config,
        };
        node.spawn_on_free_port().await?;
        Ok(node)
    }

    /// Picks a free port pair and starts there; when another process took one of the ports
    /// between the check and redis-server's bind, tries another pair (a few times).
    async fn spawn_on_free_port(&mut self) -> Result<(), LocalError> {
        let mut attempt = 0;
        loop {
            self.addr.port = free_port_pair()?;
            match self.spawn().await {
                Err(LocalError::NotReady { log, .. })
                    if attempt < 4 && log.contains("Address already in use") =>
                {
                    attempt += 1;
                    self.kill().await;
                    tracing::debug!(
                        port = self.addr.port,
                        "port taken meanwhile, trying another"
                    );
                }
                other => return other,
            }
        }
    }

    /// Starts a node on a given port, in `dir` (kept after drop). Used by `kredis local`.
    pub async fn start_in(
        dir: &Path,
        port: u16,
        config: LocalNodeConfig,
    ) -> Result<Self, LocalError> {
        std::fs::create_dir_all(dir).map_err(LocalError::Dir)?;
        let mut node = LocalNode {
            addr: NodeAddr::new("127.0.0.1", port),
            dir: dir.to_path_buf(),
            _tmp: None,
            child: None,
            config,
        };
        node.spawn().await?;
        Ok(node)
    }

    async fn spawn(&mut self) -> Result<(), LocalError> {
        let port = self.addr.port;
        let mut cmd = Command::new("redis-server");
        let dir = self.dir.display().to_string();
        let mut args: Vec<(String, String)> = match &self.config.tls {
            None => vec![("port".into(), port.to_string())],
            Some(tls) => self.tls_args(tls)?,
        };
        args.extend([
            ("bind".into(), "127.0.0.1".into()),
            ("dir".into(), dir.clone()),
            ("logfile".into(), format!("{dir}/redis.log")),
            ("save".into(), String::new()),
            ("appendonly".into(), "no".into()),
            ("daemonize".into(), "no".into()),
            ("protected-mode".into(), "no".into()),
        ]);
        if self.config.cluster_enabled {
            args.extend([
                ("cluster-enabled".into(), "yes".into()),
                ("cluster-config-file".into(), format!("{dir}/nodes.conf")),
                (
                    "cluster-node-timeout".into(),
                    self.config.node_timeout_ms.to_string(),
                ),
                // PITFALLS 16: the operator, not Redis, decides where replicas belong.
                ("cluster-replica-validity-factor".into(), "0".into()),
                ("cluster-allow-replica-migration".into(), "no".into()),
                ("cluster-announce-ip".into(), "127.0.0.1".into()),
            ]);
        }
        if let Some(pw) = &self.config.password {
            args.push(("requirepass".into(), pw.clone()));
            args.push(("masterauth".into(), pw.clone()));
        }
        args.extend(self.config.extra.iter().cloned());
        for (k, v) in &args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|source| LocalError::Spawn { port, source })?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Writes the certificate files into the node's directory; the TLS-only directives.
    fn tls_args(&self, tls: &TlsConfig) -> Result<Vec<(String, String)>, LocalError> {
        let write = |name: &str, pem: &[u8]| -> Result<String, LocalError> {
            let path = self.dir.join(name);
            std::fs::write(&path, pem).map_err(LocalError::Dir)?;
            Ok(path.display().to_string())
        };
        let mut args = vec![
            ("port".into(), "0".into()),
            ("tls-port".into(), self.addr.port.to_string()),
            ("tls-cluster".into(), "yes".into()),
            ("tls-replication".into(), "yes".into()),
            ("tls-ca-cert-file".into(), write("ca.crt", &tls.ca_cert)?),
        ];
        if let Some((cert, key)) = &tls.client {
            args.push(("tls-cert-file".into(), write("tls.crt", cert)?));
            args.push(("tls-key-file".into(), write("tls.key", key)?));
        }
        Ok(args)
    }

    async fn wait_ready(&mut self) -> Result<(), LocalError> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        let admin = std::sync::Arc::new(AdminConfig {
            credentials: Credentials {
                username: None,
                password: self.config.password.clone(),
            },
            tls: self.config.tls.clone(),
            ..AdminConfig::default()
        });
        while Instant::now() < deadline {
            if let Ok(client) = NodeClient::connect(&self.addr, admin.clone()).await {
                if client.ping().await.is_ok() {
                    return Ok(());
                }
            }
            if !self.is_running() {
                // Exited (a port taken, a bad option): no point in waiting longer.
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LocalError::NotReady {
            port: self.addr.port,
            after: started.elapsed(),
            log: self.log_tail(),
        })
    }

    /// The client address.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The cluster bus port.
    pub fn bus_port(&self) -> u16 {
        self.addr.port + BUS_PORT_OFFSET
    }

    /// The node's directory (holds nodes.conf and redis.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the process (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Kills and starts the process again on the same port. With `keep_state` false the
    /// node loses its nodes.conf (and comes back with a new id).
    pub async fn restart(&mut self, keep_state: bool) -> Result<(), LocalError> {
        self.kill().await;
        if !keep_state {
            let _ = std::fs::remove_file(self.dir.join("nodes.conf"));
        }
        self.spawn().await
    }

    /// Kills the process and starts it again, with its nodes.conf, on a new free port: the
    /// same node id at a new address (a rescheduled pod).
    pub async fn move_to_new_port(&mut self) -> Result<(), LocalError> {
        self.kill().await;
        let old = self.addr.port;
        self.spawn_on_free_port().await?;
        if let Ok(mut reserved) = reserved_ports().lock() {
            reserved.remove(&old);
        }
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`...) with kill(1): tests freeze a node
    /// with STOP to provoke timeouts.
    pub fn signal(&self, name: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The last lines of the node's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Ok(mut reserved) = reserved_ports().lock() {
            reserved.remove(&self.addr.port);
        }
    }
}
