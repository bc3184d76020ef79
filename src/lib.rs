//! keyhook: the admission, conversion and TLS server for External-Secrets-style
//! Kubernetes webhooks.
