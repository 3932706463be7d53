//! Errors of the admin client. Each names the node and the command.

use std::time::Duration;

use redis::RedisError;

use crate::model::{ModelError, NodeAddr};

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The TCP connection or handshake failed.
    #[error("failed to connect to {addr}")]
    Connect {
        /// Node address.
        addr: NodeAddr,
        /// Cause.
        #[source]
        source: Box<RedisError>,
    },
    /// The node rejected our credentials, or requires some.
    #[error("failed to authenticate to {addr}: wrong or missing password")]
    Auth {
        /// Node address.
        addr: NodeAddr,
        /// Cause.
        #[source]
        source: Box<RedisError>,
    },
    /// The node runs without `cluster-enabled yes`.
    #[error("failed to use {addr}: the node is not cluster-enabled")]
    NotClusterEnabled {
        /// Node address.
        addr: NodeAddr,
    },
    /// No answer in time.
    #[error("failed to run {op} on {addr}: no reply within {after:?}")]
    Timeout {
        /// Node address.
        addr: NodeAddr,
        /// Command.
        op: &'static str,
        /// The bound that expired.
        after: Duration,
    },
    /// The node answered with an error.
    #[error("failed to run {op} on {addr}")]
    Command {
        /// Node address.
        addr: NodeAddr,
        /// Command.
        op: &'static str,
        /// Cause.
        #[source]
        source: Box<RedisError>,
    },
    /// The reply did not parse.
    #[error("failed to parse the reply of {op} from {addr}")]
    Parse {
        /// Node address.
        addr: NodeAddr,
        /// Command.
        op: &'static str,
        /// Cause.
        #[source]
        source: ModelError,
    },
    /// A TLS handshake of our own (not through redis-rs) failed.
    #[error("failed to complete a TLS handshake with {addr}")]
    Handshake {
        /// Node address.
        addr: NodeAddr,
        /// Cause (rustls' error inside an I/O error).
        #[source]
        source: std::io::Error,
    },
    /// The reply had an unexpected shape.
    #[error("failed to understand the reply of {op} from {addr}: {detail}")]
    Protocol {
        /// Node address.
        addr: NodeAddr,
        /// Command.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl AdminError {
    pub(crate) fn connect(addr: &NodeAddr, source: RedisError) -> Self {
        let auth = is_auth_error(&source);
        let source = Box::new(source);
        if auth {
            AdminError::Auth {
                addr: addr.clone(),
                source,
            }
        } else {
            AdminError::Connect {
                addr: addr.clone(),
                source,
            }
        }
    }

    pub(crate) fn command(addr: &NodeAddr, op: &'static str, source: RedisError) -> Self {
        let text = source.to_string();
        let auth = is_auth_error(&source);
        let source = Box::new(source);
        if text.contains("cluster support disabled") {
            AdminError::NotClusterEnabled { addr: addr.clone() }
        } else if auth {
            AdminError::Auth {
                addr: addr.clone(),
                source,
            }
        } else {
            AdminError::Command {
                addr: addr.clone(),
                op,
                source,
            }
        }
    }

    /// The node this error concerns.
    pub fn addr(&self) -> &NodeAddr {
        match self {
            AdminError::Connect { addr, .. }
            | AdminError::Auth { addr, .. }
            | AdminError::NotClusterEnabled { addr }
            | AdminError::Timeout { addr, .. }
            | AdminError::Command { addr, .. }
            | AdminError::Parse { addr, .. }
            | AdminError::Handshake { addr, .. }
            | AdminError::Protocol { addr, .. } => addr,
        }
    }

    /// Whether the connection is unusable (reconnect next time) or the node unreachable.
    pub fn is_connection_error(&self) -> bool {
        match self {
            AdminError::Connect { .. }
            | AdminError::Timeout { .. }
            | AdminError::Handshake { .. } => true,
            AdminError::Command { source, .. } => {
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_unrecoverable_error()
            }
            _ => false,
        }
    }

    /// The Redis error code (`BUSYKEY`, `OOM`, `IOERR`, `ERR`...), if the node answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Command { source, .. } => source.code(),
            _ => None,
        }
    }

    /// MIGRATE found the key already on the target. Redis wraps the target's reply, so the
    /// code is not `BUSYKEY` itself ("Target instance replied with error: BUSYKEY ...").
    pub fn is_busykey(&self) -> bool {
        self.detail().contains("BUSYKEY")
    }

    /// The full error text the node sent, if any.
    pub fn detail(&self) -> String {
        match self {
            AdminError::Command { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }

    /// A stable category for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            AdminError::Connect { .. } => "unreachable",
            AdminError::Handshake { .. } => "tls",
            AdminError::Auth { .. } => "auth",
            AdminError::NotClusterEnabled { .. } => "not_cluster_enabled",
            AdminError::Timeout { .. } => "timeout",
            AdminError::Command { .. } => "redis_error",
            AdminError::Parse { .. } | AdminError::Protocol { .. } => "protocol",
        }
    }
}

fn is_auth_error(e: &RedisError) -> bool {
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        || e.to_string().contains("invalid password")
        || e.kind() == redis::ErrorKind::AuthenticationFailed
}
