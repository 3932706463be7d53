//! SIGINT/SIGTERM as a future, for graceful shutdowns.

/// Completes on the first SIGINT or SIGTERM (or at once if the handlers cannot be installed,
/// which only happens when the process is out of resources).
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: failed to install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
