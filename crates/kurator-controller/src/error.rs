//! Reconcile errors. Every error carries a category, used for metrics, events and the retry
//! policy: invalid input waits for a change, transient failures retry with backoff.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host API refused or failed a call.
    #[error("host API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing our finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// An object cannot be serialised (a bug, not a user error).
    #[error("serialisation: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A state the controller does not expect (a bug, or an object not yet saved).
    #[error("internal: {0}")]
    Internal(String),
}

/// Coarse error class for metrics and requeue decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Conflicts, timeouts, 5xx: retry soon.
    Transient,
    /// Rejected by the API server (4xx other than conflict): retry slowly.
    Rejected,
    /// A bug on our side.
    Internal,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transient => "transient",
            Category::Rejected => "rejected",
            Category::Internal => "internal",
        }
    }
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(kube::Error::Api(status))
                if status.code != 409 && (400..500).contains(&status.code) =>
            {
                Category::Rejected
            }
            Error::Kube(_) | Error::Finalizer(_) => Category::Transient,
            Error::Serialize(_) | Error::Internal(_) => Category::Internal,
        }
    }
}

impl<E: std::error::Error + 'static> From<kube::runtime::finalizer::Error<E>> for Error {
    fn from(e: kube::runtime::finalizer::Error<E>) -> Self {
        Error::Finalizer(e.to_string())
    }
}
