//! Worker nodes: the node controller (a kubelet per Node object, each with its own loopback
//! address), the scheduler and the kubelets that run pods as local processes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::meta;

/// The per-pod directory under the state directory (volumes and logs live there).
pub fn pod_dir(state_dir: &Path, pod: &Value) -> PathBuf {
    state_dir.join("pods").join(format!(
        "{}_{}_{}",
        meta::namespace(pod),
        meta::name(pod),
        meta::uid(pod)
    ))
}

/// The node controller and its kubelets (placeholder until the kubelet lands).
#[derive(Debug)]
pub struct Nodes {
    task: tokio::task::JoinHandle<()>,
}

impl Nodes {
    /// Starts the node controller.
    pub fn start(_store: std::sync::Arc<crate::store::Store>, _dir: PathBuf) -> Self {
        Self {
            task: tokio::spawn(async {}),
        }
    }

    /// Stops every kubelet.
    pub async fn shutdown(self) {
        self.task.abort();
    }
}
