//! Polling with a deadline: the one way the tests and the test environment wait for something.
//!
//! ```no_run
//! # async fn demo(api: kube::Api<k8s_openapi::api::core::v1::ConfigMap>) -> kurator_testenv::Result<()> {
//! use std::time::Duration;
//! // Done when the closure's answer says so (see [`Observation`]); on timeout the error names
//! // what was awaited, for how long, and the last thing seen.
//! let greeting = kurator_testenv::wait::until("ConfigMap greeter", Duration::from_secs(30), || async {
//!     match api.get_opt("greeter").await {
//!         Ok(Some(cm)) => Ok(cm.data.and_then(|d| d.get("greeting").cloned())),
//!         Ok(None) => Err("absent".to_string()),
//!         Err(e) => Err(e.to_string()),
//!     }
//! })
//! .await?;
//! # let _ = greeting;
//! # Ok(()) }
//! ```

use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// How often [`until`] and [`until_blocking`] look.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// One look at the awaited thing: done (with a value) or not yet (perhaps saying what was
/// seen, reported if the wait times out).
///
/// - `bool`: done when true;
/// - `Option<T>`: done with `T` when `Some`;
/// - `()`: done;
/// - `Result<O, E>`: `Ok(o)` as `o` says; `Err(e)` is not yet, and `e` is what was seen (shown
///   with `{:#}`, so an `anyhow::Error` shows its causes).
pub trait Observation {
    type Value;
    /// `Ok(value)` when done; `Err(Some(seen))` / `Err(None)` when not yet.
    fn verdict(self) -> std::result::Result<Self::Value, Option<String>>;
}

impl Observation for bool {
    type Value = ();
    fn verdict(self) -> std::result::Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl Observation for () {
    type Value = ();
    fn verdict(self) -> std::result::Result<(), Option<String>> {
        Ok(())
    }
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn verdict(self) -> std::result::Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<O: Observation, E: Display> Observation for std::result::Result<O, E> {
    type Value = O::Value;
    fn verdict(self) -> std::result::Result<O::Value, Option<String>> {
        match self {
            Ok(o) => o.verdict(),
            Err(e) => Err(Some(format!("{e:#}"))),
        }
    }
}

/// Calls `check` every [`INTERVAL`] until its answer is done and returns the value; after
/// `timeout` (at least one look is always taken) fails with [`Error::Timeout`] naming `what`
/// and the last thing seen.
pub async fn until<F, Fut, O>(what: impl Display, timeout: Duration, check: F) -> Result<O::Value>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Observation,
{
    until_every(what, timeout, INTERVAL, check).await
}

/// As [`until`], looking every `interval`.
pub async fn until_every<F, Fut, O>(
    what: impl Display,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<O::Value>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Observation,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().await.verdict() {
            Ok(value) => return Ok(value),
            Err(seen) => last = seen.or(last),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, timeout, last));
        }
        tokio::time::sleep(interval).await;
    }
}

/// As [`until_every`], for code that may not use the async runtime (blocking tests, `Drop`).
pub fn until_blocking<F, O>(
    what: impl Display,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<O::Value>
where
    F: FnMut() -> O,
    O: Observation,
{
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check().verdict() {
            Ok(value) => return Ok(value),
            Err(seen) => last = seen.or(last),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, timeout, last));
        }
        std::thread::sleep(interval);
    }
}

fn timed_out(what: impl Display, timeout: Duration, last: Option<String>) -> Error {
    Error::Timeout {
        what: what.to_string(),
        seconds: timeout.as_secs_f64(),
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn returns_the_value_once_done() {
        let n = Cell::new(0);
        let got = until_every(
            "three looks",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n.set(n.get() + 1);
                let seen = n.get();
                async move { (seen >= 3).then_some(seen) }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_what_and_the_last_thing_seen() {
        let n = Cell::new(0);
        let err = until_every("the answer", Duration::ZERO, Duration::ZERO, || {
            n.set(n.get() + 1);
            async { Err::<bool, _>("41, not 42") }
        })
        .await
        .unwrap_err();
        assert_eq!(n.get(), 1, "looks once even without time");
        assert_eq!(
            err.to_string(),
            "timed out after 0.0s waiting for the answer; last observed: 41, not 42"
        );
        let err = until_every(
            "nothing",
            Duration::from_millis(30),
            Duration::ZERO,
            || async { false },
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 0.0s waiting for nothing");
    }

    #[test]
    fn observations() {
        assert_eq!(true.verdict(), Ok(()));
        assert_eq!(false.verdict(), Err(None));
        assert_eq!(().verdict(), Ok(()));
        assert_eq!(Some(1).verdict(), Ok(1));
        assert_eq!(None::<i32>.verdict(), Err(None));
        assert_eq!(Ok::<_, String>(Some(2)).verdict(), Ok(2));
        assert_eq!(Ok::<bool, String>(false).verdict(), Err(None));
        assert_eq!(
            Err::<bool, _>("seen").verdict(),
            Err(Some("seen".to_string()))
        );
    }

    #[test]
    fn blocking_waits_keep_the_last_thing_seen() {
        let n = Cell::new(0);
        let err = until_blocking("a flip", Duration::from_millis(20), Duration::ZERO, || {
            n.set(n.get() + 1);
            // A description first, then plain "not yet": the description is kept.
            if n.get() == 1 { Err("flop") } else { Ok(false) }
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("waiting for a flip; last observed: flop"),
            "{err}"
        );
        assert_eq!(
            until_blocking("done", Duration::ZERO, Duration::ZERO, || true).unwrap(),
            ()
        );
    }
}
