//! Probes and lifecycle handlers: exec (a command in the container's environment), tcpSocket
//! (connect to the pod IP) and httpGet (a plain HTTP/1.0 GET, 2xx/3xx is success). Touches the
//! loopback network and spawns short-lived processes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::container::{self, Launch};

/// Probe timing with Kubernetes defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `initialDelaySeconds`.
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10).
    pub period: Duration,
    /// `timeoutSeconds` (default 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1).
    pub success: u32,
    /// `failureThreshold` (default 3).
    pub failure: u32,
}

impl Timing {
    /// Reads a probe's timing fields.
    pub fn of(p: &Value) -> Self {
        // Clamped to a day: user input must not overflow Instant arithmetic.
        let secs = |k: &str, d: u64| {
            Duration::from_secs(p.get(k).and_then(Value::as_u64).unwrap_or(d).min(86_400))
        };
        Self {
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10).max(Duration::from_secs(1)),
            timeout: secs("timeoutSeconds", 1).max(Duration::from_secs(1)),
            success: p
                .get("successThreshold")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1) as u32,
            failure: p
                .get("failureThreshold")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .max(1) as u32,
        }
    }
}

fn port_of(handler: &Value, container: &Value) -> Option<u16> {
    match handler.get("port")? {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            container
                .get("ports")
                .and_then(Value::as_array)?
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))?
                .get("containerPort")?
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

/// Runs one probe or handler (`exec`, `tcpSocket`, `httpGet`); true on success.
pub async fn run(
    handler: &Value,
    container: &Value,
    launch: &Launch,
    mounts: &[(String, PathBuf)],
    pod_ip: &str,
    timeout: Duration,
) -> bool {
    if let Some(cmd) = handler.pointer("/exec/command").and_then(Value::as_array) {
        let argv: Vec<String> = cmd
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        return container::exec(launch, &argv, mounts, timeout).await;
    }
    if let Some(tcp) = handler.get("tcpSocket") {
        let Some(port) = port_of(tcp, container) else {
            return false;
        };
        let host = tcp
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or(pod_ip)
            .to_owned();
        return matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if let Some(http) = handler.get("httpGet") {
        let Some(port) = port_of(http, container) else {
            return false;
        };
        let host = http
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or(pod_ip)
            .to_owned();
        let path = http
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_owned();
        let attempt = async move {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n\r\n").as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        };
        return matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)));
    }
    false
}
