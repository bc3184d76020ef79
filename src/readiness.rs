//! What `/readyz` reports: named checks, each passed or failed with a
//! detail, gathered from whichever parts of keyhook have a say (the served
//! certificate, the injected caBundle, the store caches).
//!
//! An advisory check is reported but does not decide readiness: it names a
//! problem that does not (yet) stop keyhook from serving, such as a cert
//! directory gone missing while the certificate loaded from it is valid.

use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The result of one named check, as `/readyz` and `certs inspect` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name of the check.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// Reported, but not counted towards readiness.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

impl Check {
    /// A check that passed.
    pub fn passed(name: &'static str, detail: impl Into<String>) -> Self {
        Self::from_result(name, Ok(detail.into()))
    }

    /// A check that failed.
    pub fn failed(name: &'static str, detail: impl Into<String>) -> Self {
        Self::from_result(name, Err(detail.into()))
    }

    /// A check that passed with `Ok`'s detail or failed with `Err`'s.
    pub fn from_result(name: &'static str, result: Result<String, String>) -> Self {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        Self {
            name,
            ok,
            detail,
            advisory: false,
        }
    }

    /// This check, reported without deciding readiness.
    pub fn advisory(self) -> Self {
        Self {
            advisory: true,
            ..self
        }
    }
}

/// A source of readiness checks.
pub trait ReadinessCheck: std::fmt::Debug + Send + Sync {
    /// The checks at `now` (Unix seconds).
    fn checks(&self, now: i64) -> Vec<Check>;
}

/// What `/readyz` looks at.
#[derive(Debug, Clone)]
pub struct Readiness {
    shutdown: CancellationToken,
    sources: Vec<Arc<dyn ReadinessCheck>>,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// Whether every check that is not advisory passed.
    pub ready: bool,
    /// Each check and its state.
    pub checks: Vec<Check>,
}

impl Readiness {
    /// Readiness that turns false as soon as `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            sources: Vec::new(),
        }
    }

    /// Adds more checks.
    pub fn with_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.sources.push(check);
        self
    }

    /// Evaluates every check at `now` (Unix seconds).
    pub fn report(&self, now: i64) -> ReadinessReport {
        let accepting = if self.shutdown.is_cancelled() {
            Check::failed("accepting_requests", "shutting down")
        } else {
            Check::passed("accepting_requests", "serving")
        };
        let mut checks = vec![accepting];
        checks.extend(self.sources.iter().flat_map(|c| c.checks(now)));
        ReadinessReport {
            ready: checks.iter().all(|c| c.ok || c.advisory),
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<Check>);

    impl ReadinessCheck for Fixed {
        fn checks(&self, _now: i64) -> Vec<Check> {
            self.0.clone()
        }
    }

    #[test]
    fn an_advisory_failure_is_reported_without_deciding_readiness() {
        let shutdown = CancellationToken::new();
        let readiness = Readiness::new(shutdown.clone()).with_check(Arc::new(Fixed(vec![
            Check::passed("serving_cert_loaded", "serving `keyhook`"),
            Check::failed("cert_dir_readable", "gone").advisory(),
        ])));
        let report = readiness.report(0);
        assert!(report.ready);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][2]["name"], "cert_dir_readable");
        assert_eq!(json["checks"][2]["ok"], false);
        assert_eq!(json["checks"][2]["advisory"], true);
        assert!(json["checks"][1].get("advisory").is_none());

        let failing =
            Readiness::new(shutdown.clone()).with_check(Arc::new(Fixed(vec![Check::failed(
                "serving_cert_loaded",
                "none",
            )])));
        assert!(!failing.report(0).ready);
        shutdown.cancel();
        assert!(!readiness.report(0).ready, "not ready while shutting down");
    }
}
