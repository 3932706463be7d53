//! Running the control plane in the foreground for `kredis dev`: waits for SIGINT or SIGTERM,
//! then stops every process it started. Touches only signals and the cluster it is given.

use crate::cluster::DevCluster;
use crate::error::DevError;

/// Waits for SIGINT/SIGTERM, then shuts the cluster down (every process stopped).
pub async fn run_until_signal(cluster: DevCluster) -> Result<(), DevError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DevError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DevError::Signal)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    cluster.shutdown().await;
    Ok(())
}
