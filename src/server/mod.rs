//! The server: certificates prepared, listeners bound, webhooks and admin
//! endpoints served until shutdown, then drained.

pub mod budget;
pub mod cluster;
pub mod connection;
pub mod listener;
pub mod mode;
pub mod offload;
pub mod record;
pub mod routes;
mod streams;
pub mod throttle;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::listener::{HEALTH_MAX_CONNECTIONS, ListenerLimits};
pub use self::mode::Mode;
use crate::readiness::{Readiness, ReadinessCheck};
use crate::{
    certs::{self, ServingCert, StandaloneCerts},
    clock::{Clock, SystemClock},
    config::{CertMode, ConnectionTimeouts, ServeArgs},
    health,
    injection::{self, FileSecrets, MeteredSecrets, PodInjector},
    leader::{self, Leadership},
    metrics::Metrics,
    providers::{FileCatalog, Providers, log_stores_loaded},
};

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not bind its address.
    #[error(
        "cannot listen on {addr} ({flag}): {source}; stop what listens there or choose another address with {flag}"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that set it.
        flag: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be prepared.
    #[error(transparent)]
    Certs(#[from] certs::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// No Kubernetes client could be built from the kubeconfig or the pod's
    /// service account.
    #[error("cluster mode: {0}; to run without a cluster, use --mode standalone")]
    Connect(#[from] mode::ConnectError),
    /// The `--stores` file cannot be used.
    #[error("--stores {path}: {reason}")]
    Stores {
        /// The file.
        path: PathBuf,
        /// Every problem in it.
        reason: String,
    },
}

/// A server with its certificates loaded and its sockets bound.
pub struct Server {
    args: ServeArgs,
    mode: Mode,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    serving: Arc<ServingCert>,
    client: Option<kube::Client>,
    injector: PodInjector,
    stores_synced: Option<Arc<dyn ReadinessCheck>>,
    webhook: TcpListener,
    health: TcpListener,
}

impl Server {
    /// Prepares certificates for `mode` and binds both listeners.
    pub async fn bind(args: ServeArgs, mode: Mode) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let identity = args.certs.service.identity();
        let serving = Arc::new(ServingCert::new(identity, metrics.certs.clone()));
        let cert_dir = &args.certs.cert_dir;
        let mut client = None;
        match mode {
            Mode::Standalone => {
                let bundle = standalone_certs(&args).ensure(clock.as_ref())?;
                serving
                    .offer(bundle, clock.unix_now())
                    .map_err(refusal_to_error)?;
            }
            Mode::Cluster if args.cluster.cert_mode == CertMode::SelfManaged => {
                client = Some(connect(args.pod.in_pod()).await?);
                tracing::info!(
                    secret = %args.cluster.cert_secret,
                    "self-managed certificates: serving from the Secret once it is read"
                );
            }
            Mode::Cluster => {
                client = Some(connect(args.pod.in_pod()).await?);
                tracing::info!(
                    cert_dir = %cert_dir.display(),
                    mode = ?args.cluster.cert_mode,
                    "serving the certificate mounted in --cert-dir and checking the bundle injected for it"
                );
                if let Err(e) = certs::reload_from_dir(cert_dir, &serving, clock.unix_now()) {
                    tracing::error!(error = %e, "no usable certificate yet; /readyz stays false until one appears");
                }
            }
        }
        let (injector, stores_synced) = build_injector(&args, client.as_ref(), &metrics, &clock)?;
        let webhook = bind(args.webhook_addr, "--webhook-addr").await?;
        let health = bind(args.health_addr, "--health-addr").await?;
        Ok(Self {
            args,
            mode,
            metrics,
            clock,
            serving,
            client,
            injector,
            stores_synced,
            webhook,
            health,
        })
    }

    /// The address the webhook listener is bound to.
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook.local_addr().unwrap_or(self.args.webhook_addr)
    }

    /// The address the health listener is bound to.
    pub fn health_addr(&self) -> SocketAddr {
        self.health.local_addr().unwrap_or(self.args.health_addr)
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests
    /// for up to `--shutdown-grace`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let (webhook_addr, health_addr) = (self.webhook_addr(), self.health_addr());
        let max_connections =
            listener::webhook_max_connections(self.args.connections.max_connections);
        let Server {
            args,
            mode,
            metrics,
            clock,
            serving,
            client,
            injector,
            stores_synced,
            webhook,
            health,
        } = self;
        log_where_everything_is(&args, mode, webhook_addr, health_addr);

        // Background tasks outlive the webhook drain: /readyz keeps
        // answering (false) until keyhook exits.
        let background = CancellationToken::new();
        let cluster = client.map(|client| {
            cluster::ClusterTasks::start(
                client,
                cluster::ClusterSettings::from_args(&args),
                serving.clone(),
                &metrics,
                clock.clone(),
                shutdown.clone(),
                background.clone(),
            )
        });
        // Self-managed replicas serve from the Secret, not from a volume.
        let watcher =
            (cluster.is_none() || args.cluster.cert_mode != CertMode::SelfManaged).then(|| {
                certs::spawn_dir_watcher(
                    args.certs.cert_dir.clone(),
                    serving.clone(),
                    certs::POLL_WITH_EVENTS,
                    clock.clone(),
                    background.clone(),
                )
            });
        let leadership = cluster
            .as_ref()
            .map_or_else(|| Leadership::fixed(true), |c| c.leadership.clone());
        let secret_loops = spawn_secret_loops(&args, &injector, &metrics, leadership, &shutdown);
        let renewal = (mode == Mode::Standalone).then(|| {
            tokio::spawn(standalone_certs(&args).renew(clock.clone(), background.clone()))
        });

        let mut readiness = Readiness::new(shutdown.clone()).with_check(serving.clone());
        if let Some(cluster) = &cluster {
            readiness = readiness.with_check(cluster.readiness.clone());
        }
        if let Some(stores_synced) = stores_synced {
            readiness = readiness.with_check(stores_synced);
        }
        let admin = listener::Listener {
            tcp: health,
            tls: None,
            service: health::router(readiness, metrics.clone(), clock.clone()),
            limits: ListenerLimits {
                max_connections: HEALTH_MAX_CONNECTIONS,
                timeouts: ConnectionTimeouts::default(),
            },
            metrics: metrics.server.health.clone(),
            handshake_failures: metrics.certs.handshake_failures.clone(),
        };
        let admin = tokio::spawn(admin.serve(background.clone(), Duration::from_secs(1)));

        let webhooks = listener::Listener {
            tcp: webhook,
            tls: Some(listener::tls_config(serving)?),
            service: routes::Webhooks::new(args.webhook_settings(), &metrics, Some(injector)),
            limits: ListenerLimits {
                max_connections,
                timeouts: args.connections.timeouts(),
            },
            metrics: metrics.server.webhook.clone(),
            handshake_failures: metrics.certs.handshake_failures.clone(),
        };
        let drained = webhooks.serve(shutdown, args.shutdown_grace).await;

        background.cancel();
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        if let Some(cluster) = cluster {
            cluster.join().await;
        }
        if let Some(renewal) = renewal {
            let _ = renewal.await;
        }
        for task in secret_loops {
            let _ = task.await;
        }
        if let Err(e) = admin.await {
            tracing::error!(error = %e, "health listener task failed");
        }
        tracing::info!(drained, "keyhook stopped");
        Ok(())
    }
}

/// The pod injector: the provider layer over the `--stores` file
/// (standalone) or the cluster's stores, writing Secrets to `--secrets-dir`
/// or to the cluster.
/// In a cluster, also a readiness check that passes once the store
/// reflectors have listed everything (see [`cluster::start_injection`]).
fn build_injector(
    args: &ServeArgs,
    client: Option<&kube::Client>,
    metrics: &Metrics,
    clock: &Arc<dyn Clock>,
) -> Result<(PodInjector, Option<Arc<dyn ReadinessCheck>>), Error> {
    let settings = args.providers.settings();
    if let Some(client) = client {
        let cluster = cluster::start_injection(client.clone(), settings, clock.clone(), metrics);
        return Ok((cluster.injector, Some(cluster.readiness)));
    }
    let catalog = match &settings.stores_file {
        Some(path) => {
            let catalog = Arc::new(
                FileCatalog::from_file(path).map_err(|errors| stores_error(path, errors))?,
            );
            log_stores_loaded(path, &catalog.summary(), "loaded");
            // The watch task lives as long as the process.
            let _watch = catalog
                .watch(path.clone())
                .map_err(|e| stores_error(path, vec![e]))?;
            catalog
        }
        None => {
            tracing::info!(
                "no --stores file: there are no stores, so a pod asking for secrets is denied (try --stores examples/stores.yaml)"
            );
            Arc::new(FileCatalog::empty())
        }
    };
    let secrets = MeteredSecrets::new(
        FileSecrets::new(args.injection.secrets_dir.clone()),
        metrics.secret_writes.clone(),
    );
    let providers =
        Providers::new(settings, catalog, metrics.providers.clone()).with_clock(clock.clone());
    let injector = PodInjector::new(
        Arc::new(providers),
        Arc::new(secrets),
        clock.clone(),
        metrics.injections.clone(),
    );
    Ok((injector, None))
}

fn stores_error(path: &std::path::Path, errors: Vec<crate::providers::ProviderError>) -> Error {
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Error::Stores {
        path: path.to_path_buf(),
        reason: errors.join("; "),
    }
}

/// Refresh and GC of the managed Secrets, on the leader only.
fn spawn_secret_loops(
    args: &ServeArgs,
    injector: &PodInjector,
    metrics: &Metrics,
    leadership: Leadership,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = args.injection.refresh_settings();
    let refresh = {
        let (injector, settings, secrets) =
            (injector.clone(), settings.clone(), metrics.secrets.clone());
        tokio::spawn(leader::run_while_leader(
            leadership.clone(),
            shutdown.clone(),
            "secret-refresh",
            move |term| {
                injection::run_refresh(injector.clone(), settings.clone(), secrets.clone(), term)
            },
        ))
    };
    let gc = {
        let injector = injector.clone();
        tokio::spawn(leader::run_while_leader(
            leadership,
            shutdown.clone(),
            "secret-gc",
            move |term| injection::run_gc(injector.clone(), settings.clone(), term),
        ))
    };
    vec![refresh, gc]
}

async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, flag, source })
}

fn refusal_to_error(refusal: certs::Refusal) -> Error {
    match refusal {
        certs::Refusal::Unusable(e) => Error::Certs(e),
        certs::Refusal::FailsChecks(problems) => {
            // A freshly generated certificate failing its own checks means
            // the flags contradict each other; say which checks failed.
            Error::Certs(certs::Error::Parse {
                what: "generated certificate".into(),
                reason: problems.join("; "),
            })
        }
    }
}

/// The certificates of a standalone run, as the flags describe them.
fn standalone_certs(args: &ServeArgs) -> StandaloneCerts {
    StandaloneCerts {
        dir: args.certs.cert_dir.clone(),
        sans: args
            .certs
            .service
            .identity()
            .san_list(&args.certs.service.extra_sans, true),
        validity: args.certs.cert_validity,
    }
}

/// A client for the cluster, saying which one at start.
async fn connect(in_pod: bool) -> Result<kube::Client, Error> {
    let (client, target) = mode::connect(in_pod).await?;
    tracing::info!(
        context = %target.context,
        server = %target.server,
        "cluster mode: using this cluster"
    );
    Ok(client)
}

fn log_where_everything_is(args: &ServeArgs, mode: Mode, webhook: SocketAddr, health: SocketAddr) {
    let dir = args.certs.cert_dir.display();
    let host = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    tracing::info!(
        "webhooks on https://{webhook} (POST {}), health and metrics on http://{health} (/healthz /readyz /metrics)",
        routes::MUTATE_POD
    );
    if mode == Mode::Cluster {
        return;
    }
    tracing::info!(
        "certificates in {dir}; try: curl --cacert {dir}/ca.crt -H 'Content-Type: application/json' --data @tests/fixtures/admission/pod-create-deployment.json https://{}{}",
        host(webhook),
        routes::MUTATE_POD
    );
}
