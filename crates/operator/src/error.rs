//! Errors of a reconcile. Each carries its cause as a `#[source]` and has a stable
//! [`Error::category`] used as a metric label and an Event reason.

use kredis_engine::reconcile::ConvergeError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("failed to {action}")]
    Kube {
        /// What the operator was doing (names the object).
        action: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The engine could not converge the Redis cluster.
    #[error("failed to converge Redis cluster {cluster}")]
    Converge {
        /// `namespace/name`.
        cluster: String,
        /// Cause.
        #[source]
        source: Box<ConvergeError>,
    },
    /// The object has no namespace or uid (it was never stored).
    #[error("KRedis {0} has no namespace or uid")]
    Unstored(String),
    /// A pod could not be built.
    #[error(transparent)]
    Build(#[from] crate::pod::BuildError),
    /// The finalizer helper failed to add or remove the finalizer.
    #[error("failed to manage the finalizer of KRedis {cluster}: {message}")]
    Finalizer {
        /// `namespace/name`.
        cluster: String,
        /// What failed (the helper's own error, flattened: it is generic over ours).
        message: String,
    },
}

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A stable category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Converge { source, .. } => match source.as_ref() {
                ConvergeError::Plan(_) => "plan",
                ConvergeError::Exec(e) => e.source.category(),
                ConvergeError::Endless { .. } => "not-converging",
                ConvergeError::Waiting(_) => "waiting",
            },
            Error::Unstored(_) => "unstored",
            Error::Build(_) => "build",
            Error::Finalizer { .. } => "finalizer",
        }
    }
}

/// The error and its causes on one line (`a: b: c`), for Events and conditions.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
