//! keyhook: the admission, conversion and TLS server for External-Secrets-style
//! Kubernetes webhooks.
//!
//! The module map follows the design (docs/architecture.md draws it):
//!
//! - the edge: [`server`] binds the listeners, routes reviews and shuts down;
//!   [`admission`] decodes reviews and answers them within their deadline;
//!   [`health`] answers the kubelet's probes and Prometheus, from the
//!   [`readiness`] checks;
//! - the webhooks' concerns: [`injection`] mutates pods and keeps the Secrets
//!   it materializes fresh; [`providers`] fetches secret values from the
//!   stores' backends; [`apis`] holds the custom resources, their conversion
//!   and validation;
//! - certificates: [`certs`] is the TLS material and the resolver that serves
//!   it, [`certs::cluster`] its Secret, caBundle injection and rotation in a
//!   cluster; [`doctor`] checks a cluster's wiring from the outside;
//! - cluster plumbing: [`leader`] elects the replica that runs controllers,
//!   [`reflectors`] are the watches keyhook keeps;
//! - shared ground: [`config`] holds every setting, [`metrics`] every metric,
//!   [`clock`] wall-clock time, [`duration`] the one duration grammar,
//!   [`file_events`] which watched-file events are changes, and
//!   [`single_flight`] the coalescing of identical concurrent work.

pub mod admission;
pub mod apis;
pub mod certs;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod duration;
pub mod file_events;
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
