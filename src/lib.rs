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
pub mod health;
pub mod injection;
pub mod leader;
pub mod metrics;
pub mod providers;
pub mod readiness;
pub mod reflectors;
pub mod server;
