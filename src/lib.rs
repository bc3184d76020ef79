//! keyhook: the admission, conversion and TLS server for External-Secrets-style
//! Kubernetes webhooks.
//!
//! The module map follows the design: [`server`] is the HTTPS edge,
//! [`admission`] decodes reviews and decides, [`certs`] issues, checks and
//! serves certificates, [`health`] answers the kubelet's probes and
//! Prometheus, [`metrics`] defines every metric, and [`config`] every setting.

pub mod admission;
pub mod apis;
pub mod certs;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod duration;
pub mod health;
pub mod injection;
pub mod leader;
pub mod metrics;
pub mod providers;
pub mod readiness;
pub mod reflectors;
pub mod server;
pub mod single_flight;

/// The name keyhook writes under: the server-side apply field manager of
/// every object it writes, and the `app.kubernetes.io/managed-by` value of
/// the Secrets it manages.
pub const FIELD_MANAGER: &str = "keyhook";
