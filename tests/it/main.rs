//! keyhook's integration tests: one crate, so the shared support code and
//! every dependency are compiled and linked once.

mod support;

mod apis_conversion;
mod apis_convert_cli;
mod apis_crds;
mod apis_offline;
mod apis_roundtrip_prop;
mod apis_schemas;
mod apis_upstream;
mod apis_validation;
mod cert_rotation;
mod chart;
mod cli;
mod cli_messages;
mod cli_mode;
mod cli_stores;
mod cluster_api;
mod cluster_flags;
mod cluster_scale;
mod cluster_scenarios;
mod doctor;
mod e2e;
mod hostile;
mod image;
mod injection_cluster;
mod injection_patch;
mod injection_prop;
mod injection_refresh;
mod injection_stack;
mod providers_aws;
mod providers_cluster;
mod providers_core;
mod providers_kubernetes;
mod providers_race;
mod providers_ratelimit;
mod providers_vault;
mod scenarios;
mod tls_clients;
mod webhook_http;
