//! keyhook: the admission, conversion and TLS server for External-Secrets-style
//! Kubernetes webhooks.
pub mod metrics;
pub mod providers;
