//! Standalone or cluster, and which cluster: a local run never touches a
//! cluster unless asked to, whatever kubeconfig the machine has.

use kube::config::{Config, KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::config::RunMode;

/// Where keyhook runs, which decides who issues its certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No cluster: keyhook is its own CA and keeps the files in `--cert-dir`.
    Standalone,
    /// A cluster: `--cert-mode` decides who issues the certificate (the
    /// Secret `--cert-secret`, or `--cert-dir`).
    Cluster,
}

impl Mode {
    /// The mode `--mode` asks for, inside a pod or not. A kubeconfig alone
    /// never makes a cluster mode: on a laptop it often points at a real
    /// cluster.
    pub fn resolve(requested: RunMode, in_pod: bool) -> Self {
        match requested {
            RunMode::Standalone => Mode::Standalone,
            RunMode::Cluster => Mode::Cluster,
            RunMode::Auto if in_pod => Mode::Cluster,
            RunMode::Auto => Mode::Standalone,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Standalone => "standalone",
            Mode::Cluster => "cluster",
        })
    }
}

/// Why no cluster client could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Outside a pod there is no kubeconfig to read.
    #[error(
        "no kubeconfig ({reason}): outside a pod keyhook reads the one KUBECONFIG names, else ~/.kube/config"
    )]
    NoKubeconfig {
        /// What reading it said.
        reason: String,
    },
    /// The kubeconfig exists but cannot be used.
    #[error("the kubeconfig cannot be used: {0}")]
    Kubeconfig(String),
    /// Inside a pod, the service account's credentials cannot be read.
    #[error("reading the pod's service account: {0}")]
    InCluster(String),
    /// The configuration was read but no client could be built from it.
    #[error("building a client for {server}: {reason}")]
    Client {
        /// The apiserver's URL.
        server: String,
        /// Why.
        reason: String,
    },
}

/// Where a cluster client points, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kubeconfig context, or `in-cluster` for the pod's service account.
    pub context: String,
    /// The apiserver's URL.
    pub server: String,
}

/// A client for the cluster keyhook runs against: the kubeconfig that
/// `KUBECONFIG` names if set; else, in a pod, the pod's service account;
/// else `~/.kube/config`. Never the in-cluster fallback outside a pod, and
/// never a kubeconfig's guess inside one. `in_pod` is
/// [`crate::config::PodArgs::in_pod`].
pub async fn connect(in_pod: bool) -> Result<(kube::Client, Target), ConnectError> {
    let from_env = Kubeconfig::from_env().map_err(kubeconfig_error)?;
    let (config, context) = match from_env {
        Some(kubeconfig) => from_kubeconfig(kubeconfig).await?,
        None if in_pod => (
            Config::incluster().map_err(|e| ConnectError::InCluster(e.to_string()))?,
            "in-cluster".to_string(),
        ),
        None => from_kubeconfig(Kubeconfig::read().map_err(kubeconfig_error)?).await?,
    };
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| ConnectError::Client {
        server: server.clone(),
        reason: e.to_string(),
    })?;
    Ok((client, Target { context, server }))
}

async fn from_kubeconfig(kubeconfig: Kubeconfig) -> Result<(Config, String), ConnectError> {
    let context = kubeconfig
        .current_context
        .clone()
        .unwrap_or_else(|| "(none)".into());
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)?;
    Ok((config, context))
}

fn kubeconfig_error(error: KubeconfigError) -> ConnectError {
    match error {
        KubeconfigError::ReadConfig(source, path) => ConnectError::NoKubeconfig {
            reason: format!("{}: {source}", path.display()),
        },
        KubeconfigError::FindPath => ConnectError::NoKubeconfig {
            reason: "no home directory to find ~/.kube/config in".into(),
        },
        other => ConnectError::Kubeconfig(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_a_cluster_only_inside_a_pod() {
        assert_eq!(Mode::resolve(RunMode::Auto, true), Mode::Cluster);
        assert_eq!(Mode::resolve(RunMode::Auto, false), Mode::Standalone);
        assert_eq!(Mode::resolve(RunMode::Cluster, false), Mode::Cluster);
        assert_eq!(Mode::resolve(RunMode::Standalone, true), Mode::Standalone);
    }
}
