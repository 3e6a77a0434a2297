//! Reconcile errors. Every error carries a category, used for metrics, events and the retry
//! policy: invalid input waits for a change, transient failures retry soon, rejected writes and
//! bugs retry slowly.

use std::time::Duration;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host API refused or failed a call.
    #[error("host API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing our finalizer failed; the category is that of the API call.
    #[error("{action} the finalizer failed: {source}")]
    Finalizer {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
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
    /// Conflicts, timeouts, 5xx, connection failures: retry soon.
    Transient,
    /// Rejected by the API server (4xx other than conflict and throttling): retry slowly.
    Rejected,
    /// A bug on our side: retry slowly.
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

    /// How long a reconcile that failed this way waits before it runs again (unless a watched
    /// change triggers it first).
    pub fn requeue_after(self) -> Duration {
        match self {
            Category::Transient => Duration::from_secs(5),
            Category::Rejected | Category::Internal => Duration::from_secs(60),
        }
    }
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(e) | Error::Finalizer { source: e, .. } => kube_category(e),
            Error::Serialize(_) | Error::Internal(_) => Category::Internal,
        }
    }

    /// The API server's message when it refused a call for lack of permission (403). It names
    /// the user, the verb and the resource (e.g. `cannot patch resource "fleets/status"`), so
    /// an operator can see which RBAC rule is missing; it never holds a secret.
    pub fn forbidden(&self) -> Option<&str> {
        match self {
            Error::Kube(kube::Error::Api(status))
            | Error::Finalizer {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => Some(&status.message),
            _ => None,
        }
    }
}

/// 409 Conflict and 429 Too Many Requests go away by themselves; other 4xx need a change.
fn kube_category(e: &kube::Error) -> Category {
    match e {
        kube::Error::Api(status)
            if (400..500).contains(&status.code) && status.code != 409 && status.code != 429 =>
        {
            Category::Rejected
        }
        _ => Category::Transient,
    }
}

/// Unwraps kube's finalizer error so the step's own error, with its category, comes through.
impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(source) => Error::Finalizer {
                action: "adding",
                source,
            },
            F::RemoveFinalizer(source) => Error::Finalizer {
                action: "removing",
                source,
            },
            F::UnnamedObject => Error::Internal("the object has no name".into()),
            F::InvalidFinalizer => Error::Internal("the finalizer name is invalid".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer::Error as F;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("test", "Test")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn server_failures_conflicts_and_throttling_are_transient_and_retry_in_seconds() {
        for code in [409, 429, 500, 503] {
            let e = Error::Kube(api(code));
            assert_eq!(e.category(), Category::Transient, "{code}");
            assert_eq!(e.category().requeue_after(), Duration::from_secs(5));
        }
    }

    #[test]
    fn only_a_403_is_forbidden_and_it_keeps_the_servers_message() {
        assert_eq!(Error::Kube(api(403)).forbidden(), Some("test"));
        let finalizer = Error::Finalizer {
            action: "adding",
            source: api(403),
        };
        assert_eq!(finalizer.forbidden(), Some("test"));
        for code in [401, 404, 409, 500] {
            assert_eq!(Error::Kube(api(code)).forbidden(), None, "{code}");
        }
    }

    #[test]
    fn a_connection_failure_is_transient() {
        let e = Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(e.category(), Category::Transient);
    }

    #[test]
    fn rejected_writes_retry_after_a_minute() {
        for code in [400, 403, 404, 422] {
            let e = Error::Kube(api(code));
            assert_eq!(e.category(), Category::Rejected, "{code}");
            assert_eq!(e.category().requeue_after(), Duration::from_secs(60));
        }
    }

    #[test]
    fn bugs_are_internal_and_retry_after_a_minute() {
        let serialize = serde_json::from_str::<u8>("x").unwrap_err();
        for e in [Error::Serialize(serialize), Error::Internal("x".into())] {
            assert_eq!(e.category(), Category::Internal);
            assert_eq!(e.category().requeue_after(), Duration::from_secs(60));
        }
    }

    #[test]
    fn the_finalizer_keeps_the_category_of_the_step_inside_it() {
        let rejected: Error = F::ApplyFailed(Error::Kube(api(422))).into();
        assert_eq!(rejected.category(), Category::Rejected);
        let internal: Error = F::CleanupFailed(Error::Internal("x".into())).into();
        assert_eq!(internal.category(), Category::Internal);
        let transient: Error = F::ApplyFailed(Error::Kube(api(500))).into();
        assert_eq!(transient.category(), Category::Transient);
    }

    #[test]
    fn finalizer_writes_are_classed_by_their_api_answer() {
        let conflict: Error = F::<Error>::AddFinalizer(api(409)).into();
        assert_eq!(conflict.category(), Category::Transient);
        let forbidden: Error = F::<Error>::RemoveFinalizer(api(403)).into();
        assert_eq!(forbidden.category(), Category::Rejected);
        assert!(
            forbidden
                .to_string()
                .starts_with("removing the finalizer failed")
        );
        let unnamed: Error = F::<Error>::UnnamedObject.into();
        assert_eq!(unnamed.category(), Category::Internal);
    }
}
