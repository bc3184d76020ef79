//! Every setting of `keyhook serve`, from flags and `KEYHOOK_*` environment
//! variables, validated once at start.
//!
//! Each value is parsed by a clap value parser, so an invalid one fails at
//! start with a message that names the flag (clap prints
//! `invalid value 'x' for '--cert-validity <DURATION>': …`).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, ValueEnum};

use crate::certs::{ServiceIdentity, SubjectAltName};

/// Settings of `keyhook serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where keyhook runs: `auto` is cluster mode inside a pod and standalone
    /// anywhere else; `cluster` outside a pod uses `KUBECONFIG` or
    /// `~/.kube/config`; `standalone` never reads a kubeconfig.
    #[arg(
        long,
        env = "KEYHOOK_MODE",
        default_value = "auto",
        value_name = "MODE"
    )]
    pub mode: RunMode,

    /// Address of the HTTPS webhook listener, an IP address and port.
    #[arg(long, env = "KEYHOOK_WEBHOOK_ADDR", default_value = "0.0.0.0:9443", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub webhook_addr: SocketAddr,

    /// Address of the plain-HTTP health and metrics listener, an IP address and port.
    #[arg(long, env = "KEYHOOK_HEALTH_ADDR", default_value = "0.0.0.0:8081", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub health_addr: SocketAddr,

    #[command(flatten)]
    pub certs: CertArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub providers: ProviderArgs,

    #[command(flatten)]
    pub injection: InjectionArgs,

    #[command(flatten)]
    pub connections: ConnectionArgs,

    /// Largest request body accepted (e.g. `8MiB`, at least `64KiB`); larger bodies get HTTP 413.
    #[arg(long, env = "KEYHOOK_MAX_BODY", default_value = "8MiB", value_name = "SIZE", value_parser = parse_max_body)]
    pub max_body: usize,

    /// Request bodies all webhook requests together may hold in memory;
    /// past it, requests wait for room until their deadline, then get 503.
    #[arg(long, env = "KEYHOOK_MAX_INFLIGHT_BYTES", default_value = "128MiB", value_name = "SIZE", value_parser = parse_byte_size)]
    pub max_inflight_bytes: usize,

    /// Deadline for answering one review; keep it under the webhooks'
    /// `timeoutSeconds` (the apiserver's default is 10 s, its maximum 30 s).
    #[arg(long, env = "KEYHOOK_REQUEST_TIMEOUT", default_value = "8s", value_name = "DURATION", value_parser = parse_request_timeout)]
    pub request_timeout: Duration,

    /// How long in-flight requests may run after SIGTERM before keyhook exits.
    #[arg(long, env = "KEYHOOK_SHUTDOWN_GRACE", default_value = "25s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub pod: PodArgs,
}

/// What the kubelet tells a process about the pod it runs in, through the
/// environment. Not settings a person gives, so the flags are hidden.
#[derive(Debug, Clone, Default, Args)]
pub struct PodArgs {
    /// Set by the kubelet in every pod: keyhook runs in one when it is set
    /// (`--mode auto` picks cluster mode, and the pod's service account
    /// serves when `KUBECONFIG` is unset).
    #[arg(
        long,
        env = "KUBERNETES_SERVICE_HOST",
        hide = true,
        value_name = "HOST"
    )]
    pub kubernetes_service_host: Option<String>,

    /// The pod's name (the chart sets it from the downward API): the start
    /// of this replica's Lease identity.
    #[arg(long, env = "POD_NAME", hide = true, value_name = "NAME")]
    pub pod_name: Option<String>,

    /// The host name, the pod's name unless the pod sets another: the
    /// Lease identity's start when `POD_NAME` is unset.
    #[arg(long, env = "HOSTNAME", hide = true, value_name = "NAME")]
    pub hostname: Option<String>,
}

impl PodArgs {
    /// Whether this process runs in a Kubernetes pod.
    pub fn in_pod(&self) -> bool {
        self.kubernetes_service_host
            .as_deref()
            .is_some_and(|host| !host.is_empty())
    }

    /// The name this replica goes by in the Lease, before its unique suffix.
    pub fn replica_name(&self) -> &str {
        self.pod_name
            .as_deref()
            .or(self.hostname.as_deref())
            .filter(|name| !name.is_empty())
            .unwrap_or("keyhook")
    }
}

/// Limits of the webhook listener's connections.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Webhook connections open at once (default: from the open-file limit,
    /// which keyhook raises to its hard limit at start); past it, idle
    /// connections are closed to make room and new ones wait.
    #[arg(long, env = "KEYHOOK_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub max_connections: Option<u32>,

    /// A TLS handshake must finish within this.
    #[arg(long, env = "KEYHOOK_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: Duration,

    /// A new connection must send its first request within this.
    #[arg(long, env = "KEYHOOK_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub first_request_timeout: Duration,

    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[arg(long, env = "KEYHOOK_IDLE_TIMEOUT", default_value = "120s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// HTTP/1.1 request headers must arrive within this.
    #[arg(long, env = "KEYHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
}

impl ConnectionArgs {
    /// The timeouts of each connection's phases.
    pub fn timeouts(&self) -> ConnectionTimeouts {
        ConnectionTimeouts {
            handshake: self.tls_handshake_timeout,
            first_request: self.first_request_timeout,
            idle: self.idle_timeout,
            header_read: self.header_read_timeout,
        }
    }
}

/// The timeouts of one connection's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// The TLS handshake must finish within this.
    pub handshake: Duration,
    /// The first request's headers must have arrived this long after the
    /// connection was accepted.
    pub first_request: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle: Duration,
    /// HTTP/1.1 request headers must arrive within this once they start.
    pub header_read: Duration,
}

impl Default for ConnectionTimeouts {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            header_read: Duration::from_secs(10),
        }
    }
}

/// Limits shared by every webhook route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Largest accepted body, bytes.
    pub max_body: usize,
    /// Request bodies all requests together may hold, bytes.
    pub max_inflight_bytes: usize,
    /// Deadline for one review, from the moment its request arrives.
    pub request_timeout: Duration,
}

impl Default for WebhookSettings {
    /// The defaults of `--max-body` (8 MiB), `--max-inflight-bytes`
    /// (128 MiB) and `--request-timeout` (8 s).
    fn default() -> Self {
        Self {
            max_body: 8 << 20,
            max_inflight_bytes: 128 << 20,
            request_timeout: Duration::from_secs(8),
        }
    }
}

/// Where certificates live and which names they must carry; shared by
/// `serve` and the `certs` subcommands.
#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Directory holding `tls.crt`, `tls.key` and `ca.crt` (and `ca.key` when keyhook manages the CA).
    #[arg(
        long,
        env = "KEYHOOK_CERT_DIR",
        default_value = "./certs",
        value_name = "DIR"
    )]
    pub cert_dir: PathBuf,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// Lifetime of a generated serving certificate (e.g. `8760h`).
    #[arg(long, env = "KEYHOOK_CERT_VALIDITY", default_value = "8760h", value_name = "DURATION", value_parser = parse_cert_validity)]
    pub cert_validity: Duration,
}

/// Who issues the serving certificate when keyhook runs in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertMode {
    /// keyhook is its own CA: the leader keeps CA and serving certificate in
    /// `--cert-secret` and injects the caBundle; every replica serves from
    /// the Secret.
    SelfManaged,
    /// OpenShift's service-ca operator issues the certificate (mounted in
    /// `--cert-dir`) and injects the bundle.
    Openshift,
    /// cert-manager or the user provides the certificate in `--cert-dir`
    /// and injects the bundle.
    External,
}

/// Where `keyhook serve` runs, as `--mode` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunMode {
    /// Cluster mode inside a pod (`KUBERNETES_SERVICE_HOST` is set),
    /// standalone anywhere else, whatever kubeconfig exists.
    Auto,
    /// No cluster: self-signed certificates in `--cert-dir`, stores from `--stores`.
    Standalone,
    /// A cluster: the pod's service account, or outside a pod `KUBECONFIG` or `~/.kube/config`.
    Cluster,
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunMode::Auto => "auto",
            RunMode::Standalone => "standalone",
            RunMode::Cluster => "cluster",
        })
    }
}

/// Settings that only matter in a cluster.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Who issues the serving certificate in a cluster: `self-managed`,
    /// `openshift` or `external` (standalone runs are always self-signed in --cert-dir).
    #[arg(long, env = "KEYHOOK_CERT_MODE", default_value = "self-managed", value_name = "MODE", value_parser = parse_cert_mode)]
    pub cert_mode: CertMode,

    /// Secret in --service-namespace holding the CA and serving certificate (self-managed mode).
    #[arg(long, env = "KEYHOOK_CERT_SECRET", default_value = "keyhook-tls", value_name = "NAME", value_parser = parse_dns_name)]
    pub cert_secret: String,

    /// Elect a leader through the Lease `keyhook` in --service-namespace; `--leader-elect=false` for a single replica.
    #[arg(
        long,
        env = "KEYHOOK_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub leader_elect: bool,
}

/// Settings of the shared provider layer that fetches secret values.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Standalone only: a multi-document YAML file of SecretStores,
    /// ClusterSecretStores and the v1 Secrets they reference; reloaded on change.
    #[arg(long, env = "KEYHOOK_STORES", value_name = "FILE")]
    pub stores: Option<PathBuf>,

    /// Backend requests per second per store (a store's `keyhook.io/qps` annotation overrides it).
    #[arg(long, env = "KEYHOOK_PROVIDER_QPS", default_value = "10", value_name = "QPS", value_parser = parse_qps, allow_negative_numbers = true)]
    pub provider_qps: f64,

    /// Token-bucket burst per store.
    #[arg(long, env = "KEYHOOK_PROVIDER_BURST", default_value = "20", value_name = "N", value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub provider_burst: u32,

    /// How long a fetched value may be reused for identical fetches (`0s` = off).
    #[arg(long, env = "KEYHOOK_PROVIDER_CACHE_TTL", default_value = "0s", value_name = "DURATION", value_parser = parse_duration)]
    pub provider_cache_ttl: Duration,

    #[command(flatten)]
    pub aws: AwsArgs,
}

/// keyhook's own AWS identity and endpoints, in the variables the AWS SDKs
/// read (what a ClusterSecretStore without `auth` uses). Hidden flags: they
/// are the SDKs' settings, given through the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct AwsArgs {
    #[arg(long = "aws-access-key-id", env = "AWS_ACCESS_KEY_ID", hide = true)]
    access_key_id: Option<String>,
    #[arg(
        long = "aws-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide = true,
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
    #[arg(
        long = "aws-session-token",
        env = "AWS_SESSION_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    session_token: Option<String>,
    #[arg(long = "aws-role-arn", env = "AWS_ROLE_ARN", hide = true)]
    role_arn: Option<String>,
    #[arg(
        long = "aws-web-identity-token-file",
        env = "AWS_WEB_IDENTITY_TOKEN_FILE",
        hide = true
    )]
    web_identity_token_file: Option<String>,
    #[arg(
        long = "aws-role-session-name",
        env = "AWS_ROLE_SESSION_NAME",
        hide = true
    )]
    role_session_name: Option<String>,
    #[arg(long = "aws-endpoint-url", env = "AWS_ENDPOINT_URL", hide = true)]
    endpoint_url: Option<String>,
    #[arg(
        long = "aws-endpoint-url-sts",
        env = "AWS_ENDPOINT_URL_STS",
        hide = true
    )]
    endpoint_url_sts: Option<String>,
    #[arg(
        long = "aws-endpoint-url-secrets-manager",
        env = "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        hide = true
    )]
    endpoint_url_secrets_manager: Option<String>,
    #[arg(
        long = "aws-secretsmanager-endpoint",
        env = "AWS_SECRETSMANAGER_ENDPOINT",
        hide = true
    )]
    secretsmanager_endpoint: Option<String>,
    #[arg(
        long = "aws-ignore-configured-endpoint-urls",
        env = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        hide = true
    )]
    ignore_configured_endpoint_urls: Option<String>,
}

impl AwsArgs {
    /// The identity these variables describe.
    pub fn environment(&self) -> crate::providers::backends::aws::AwsEnvironment {
        crate::providers::backends::aws::AwsEnvironment::from_vars(|name| {
            match name {
                "AWS_ACCESS_KEY_ID" => &self.access_key_id,
                "AWS_SECRET_ACCESS_KEY" => &self.secret_access_key,
                "AWS_SESSION_TOKEN" => &self.session_token,
                "AWS_ROLE_ARN" => &self.role_arn,
                "AWS_WEB_IDENTITY_TOKEN_FILE" => &self.web_identity_token_file,
                "AWS_ROLE_SESSION_NAME" => &self.role_session_name,
                "AWS_ENDPOINT_URL" => &self.endpoint_url,
                "AWS_ENDPOINT_URL_STS" => &self.endpoint_url_sts,
                "AWS_ENDPOINT_URL_SECRETS_MANAGER" => &self.endpoint_url_secrets_manager,
                "AWS_SECRETSMANAGER_ENDPOINT" => &self.secretsmanager_endpoint,
                "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" => &self.ignore_configured_endpoint_urls,
                _ => &None,
            }
            .clone()
        })
    }
}

impl ProviderArgs {
    /// The provider layer's settings these flags describe.
    pub fn settings(&self) -> crate::providers::ProviderSettings {
        crate::providers::ProviderSettings {
            qps: self.provider_qps,
            burst: self.provider_burst,
            cache_ttl: self.provider_cache_ttl,
            stores_file: self.stores.clone(),
            aws: self.aws.environment(),
            ..Default::default()
        }
    }
}

/// Settings of pod secret injection and the leader's refresh and GC loops.
#[derive(Debug, Clone, Args)]
pub struct InjectionArgs {
    /// Standalone only: directory the managed Secrets are written to, as `<namespace>/<name>.yaml` (mode 0600).
    #[arg(
        long,
        env = "KEYHOOK_SECRETS_DIR",
        default_value = "./secrets",
        value_name = "DIR"
    )]
    pub secrets_dir: PathBuf,

    /// Spread of refresh times, as a percentage of a store's refresh interval (e.g. `10%`).
    #[arg(long, env = "KEYHOOK_REFRESH_JITTER", default_value = "10%", value_name = "PERCENT", value_parser = parse_jitter, allow_negative_numbers = true)]
    pub refresh_jitter: f64,

    /// Window over which Secrets overdue for refresh (after an outage or a restart) are spread.
    #[arg(long, env = "KEYHOOK_REFRESH_CATCHUP", default_value = "1m", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub refresh_catchup: Duration,

    /// How long a managed Secret no pod references is kept before it is deleted.
    #[arg(long, env = "KEYHOOK_GC_GRACE", default_value = "15m", value_name = "DURATION", value_parser = parse_duration)]
    pub gc_grace: Duration,
}

impl ServeArgs {
    /// The limits of every webhook route these flags describe.
    pub fn webhook_settings(&self) -> WebhookSettings {
        WebhookSettings {
            max_body: self.max_body,
            max_inflight_bytes: self.max_inflight_bytes,
            request_timeout: self.request_timeout,
        }
    }
}

impl InjectionArgs {
    /// The leader loops' settings these flags describe.
    pub fn refresh_settings(&self) -> crate::injection::RefreshSettings {
        crate::injection::RefreshSettings {
            jitter: self.refresh_jitter,
            catchup: self.refresh_catchup,
            gc_grace: self.gc_grace,
            ..Default::default()
        }
    }
}

/// Parses `10%` (or `0.1`) into a fraction in `[0, 0.5]`.
fn parse_jitter(value: &str) -> Result<f64, String> {
    let trimmed = value.trim();
    let fraction = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => trimmed.parse::<f64>(),
    };
    match fraction {
        Ok(f) if (0.0..=0.5).contains(&f) => Ok(f),
        _ => Err("must be a percentage from 0% to 50%, e.g. `10%`".into()),
    }
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        d if d.is_zero() => Err("must be more than 0s".into()),
        d => Ok(d),
    }
}

fn parse_qps(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps > 0.0 => Ok(qps),
        _ => Err("must be a number of requests per second above 0, e.g. `10` or `0.5`".into()),
    }
}

/// The Service the apiserver dials, which decides the names a serving
/// certificate must carry.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Name of the Service in front of keyhook.
    #[arg(long, env = "KEYHOOK_SERVICE_NAME", default_value = "keyhook", value_name = "NAME", value_parser = parse_dns_label)]
    pub service_name: String,

    /// Namespace of that Service.
    #[arg(long, env = "KEYHOOK_SERVICE_NAMESPACE", default_value = "keyhook", value_name = "NAMESPACE", value_parser = parse_dns_label)]
    pub service_namespace: String,

    /// The cluster's DNS domain.
    #[arg(long, env = "KEYHOOK_CLUSTER_DOMAIN", default_value = "cluster.local", value_name = "DOMAIN", value_parser = parse_dns_name)]
    pub cluster_domain: String,

    /// Another DNS name or IP address for the serving certificate (repeatable;
    /// comma-separated in the environment variable).
    #[arg(
        long = "extra-san",
        env = "KEYHOOK_EXTRA_SAN",
        value_delimiter = ',',
        value_name = "NAME_OR_IP"
    )]
    pub extra_sans: Vec<SubjectAltName>,
}

impl ServiceArgs {
    /// The service identity these flags describe.
    pub fn identity(&self) -> ServiceIdentity {
        ServiceIdentity {
            name: self.service_name.clone(),
            namespace: self.service_namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        env = "KEYHOOK_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// A tracing filter such as `info` or `keyhook=debug,info`; `RUST_LOG` is
    /// read when this is not set.
    #[arg(long, env = "KEYHOOK_LOG_LEVEL", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// The tracing ecosystem's own filter variable, used when `--log-level`
    /// is not set; one that does not parse is ignored, as tracing does.
    #[arg(long, env = "RUST_LOG", hide = true, value_name = "FILTER")]
    pub rust_log: Option<String>,
}

impl LogArgs {
    /// The filter in force: `--log-level`, else `RUST_LOG` when it parses,
    /// else `info`.
    pub fn filter(&self) -> String {
        self.log_level
            .clone()
            .or_else(|| {
                self.rust_log
                    .clone()
                    .filter(|filter| !filter.trim().is_empty() && parse_log_filter(filter).is_ok())
            })
            .unwrap_or_else(|| "info".into())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Parses a duration as Go writes it, the grammar of every duration keyhook
/// reads: `8s`, `15m`, `8760h`, `1h30m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    crate::duration::parse(value).map_err(|e| e.to_string())
}

/// What the apiserver waits for a webhook unless its configuration sets
/// `timeoutSeconds`.
pub const APISERVER_DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

impl ServeArgs {
    /// Settings that are valid but probably not what the user meant, each as
    /// a sentence naming the flag and what to do.
    pub fn doubtful(&self) -> Vec<String> {
        let mut doubts = Vec::new();
        if self.request_timeout >= APISERVER_DEFAULT_WEBHOOK_TIMEOUT {
            let timeout = humantime::format_duration(self.request_timeout);
            doubts.push(format!(
                "--request-timeout {timeout} is not below the apiserver's default webhook timeout of {} s (30 s at most, when a webhook configuration sets `timeoutSeconds`): unless every keyhook webhook sets timeoutSeconds above {timeout}, the apiserver gives up first and the call fails with its own timeout instead of keyhook's message; raise the webhooks' timeoutSeconds (the chart's `webhook.timeoutSeconds`) or keep --request-timeout under it (default 8s)",
                APISERVER_DEFAULT_WEBHOOK_TIMEOUT.as_secs(),
            ));
        }
        doubts
    }
}

fn parse_request_timeout(value: &str) -> Result<Duration, String> {
    let timeout = parse_duration(value)?;
    // The apiserver never waits more than 30 s for a webhook; a deadline at
    // or past that would never fire before the apiserver gives up.
    if timeout.is_zero() || timeout >= Duration::from_secs(30) {
        return Err(
            "must be more than 0s and less than 30s, the apiserver's longest webhook timeout"
                .into(),
        );
    }
    Ok(timeout)
}

fn parse_cert_validity(value: &str) -> Result<Duration, String> {
    let validity = parse_duration(value)?;
    // Certificates start 5 minutes in the past (clock skew) and are renewed
    // with a third of their life left: much shorter lives renew in a loop.
    if validity < Duration::from_secs(3600) {
        return Err("must be at least 1h".into());
    }
    if validity > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("must not exceed the CA's 10 years".into());
    }
    Ok(validity)
}

/// Parses a byte size such as `8MiB`, `512KiB` or `1048576`.
fn parse_byte_size(value: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = value
        .parse()
        .map_err(|e| format!("{e} (expected e.g. `8MiB`, `512KiB`)"))?;
    let bytes =
        usize::try_from(size.as_u64()).map_err(|_| "too large for this platform".to_string())?;
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(bytes)
}

/// The smallest `--max-body`: a pod's AdmissionReview carries the pod twice
/// on UPDATE and often runs to tens of KiB, so a smaller limit refuses
/// ordinary reviews.
const MIN_MAX_BODY: usize = 64 << 10;

fn parse_max_body(value: &str) -> Result<usize, String> {
    let bytes = parse_byte_size(value)?;
    if bytes < MIN_MAX_BODY {
        return Err(format!(
            "{bytes} bytes would refuse ordinary reviews (a pod's AdmissionReview often runs to tens of KiB): must be at least 64KiB; the default is 8MiB"
        ));
    }
    Ok(bytes)
}

/// Parses a listen address: an IP address and a port. A host name gets a
/// hint, since a listener binds an address, not a name.
fn parse_listen_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let hint = match value.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.eq_ignore_ascii_case("localhost") {
                format!(
                    "use `127.0.0.1:{port}` (this machine only) or `0.0.0.0:{port}` (every interface)"
                )
            } else if host.is_empty() {
                format!(
                    "give the address too: `0.0.0.0:{port}` (every interface) or `127.0.0.1:{port}` (this machine only)"
                )
            } else {
                format!(
                    "`{host}` is a name, not an IP address: give the address it stands for, e.g. `0.0.0.0:{port}` for every interface"
                )
            }
        }
        _ => "expected an IP address and a port, e.g. `0.0.0.0:9443` or `127.0.0.1:9443`".into(),
    };
    Err(format!("not an IP address and port: {hint}"))
}

/// Parses `--cert-mode`, pointing from the chart's `certs.mode` names that
/// the binary does not take to the one that does the same.
fn parse_cert_mode(value: &str) -> Result<CertMode, String> {
    if let Ok(mode) = <CertMode as ValueEnum>::from_str(value, false) {
        return Ok(mode);
    }
    Err(match value {
        "cert-manager" => "`cert-manager` is a mode of the Helm chart (`certs.mode`); keyhook itself runs it as `--cert-mode external`: cert-manager writes the certificate into --cert-dir and injects the caBundle, keyhook serves and checks it".into(),
        _ => "expected `self-managed` (keyhook is its own CA), `openshift` (the service-ca operator issues the certificate) or `external` (cert-manager or you provide it in --cert-dir)".into(),
    })
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_string())
        .map_err(|e| format!("not a tracing filter: {e}"))
}

/// A DNS-1123 label: what Kubernetes accepts as a Service or Namespace name.
fn parse_dns_label(value: &str) -> Result<String, String> {
    check_dns_label(value).map(|()| value.to_string())
}

fn parse_dns_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for label in value.split('.') {
        check_dns_label(label).map_err(|e| format!("label `{label}`: {e}"))?;
    }
    Ok(value.to_string())
}

fn check_dns_label(label: &str) -> Result<(), String> {
    let bytes = label.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let edges_alnum = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if label.is_empty() || label.len() > 63 || !valid_chars || !edges_alnum {
        return Err(
            "must be a DNS label: 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

impl FromStr for SubjectAltName {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = value.parse() {
            return Ok(SubjectAltName::Ip(ip));
        }
        let name = value.strip_prefix("*.").unwrap_or(value);
        parse_dns_name(name).map_err(|e| format!("neither an IP address nor a DNS name: {e}"))?;
        Ok(SubjectAltName::Dns(value.to_string()))
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_in_their_usual_forms() {
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(parse_request_timeout("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_byte_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_byte_size("1048576"), Ok(1024 * 1024));
    }

    #[test]
    fn out_of_range_values_say_what_is_allowed() {
        assert!(
            parse_request_timeout("30s")
                .unwrap_err()
                .contains("less than 30s")
        );
        assert!(
            parse_request_timeout("0s")
                .unwrap_err()
                .contains("more than 0s")
        );
        assert!(
            parse_cert_validity("10s")
                .unwrap_err()
                .contains("at least 1h")
        );
        assert!(parse_byte_size("0").unwrap_err().contains("more than 0"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("is not a Go duration")
        );
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn platform_variables_arrive_through_the_parser() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let flags = Flags::parse_from([
            "keyhook",
            "--aws-access-key-id",
            "AKIDEXAMPLE",
            "--aws-secret-access-key",
            "wJalrXUtnFEMI",
            "--aws-endpoint-url",
            "http://127.0.0.1:5000",
            "--kubernetes-service-host",
            "10.0.0.1",
            "--pod-name",
            "keyhook-0",
        ]);
        let aws = flags.serve.providers.aws.environment();
        let keys = aws.static_keys.expect("static keys");
        assert_eq!(keys.access_key_id, "AKIDEXAMPLE");
        assert_eq!(keys.secret_access_key.expose(), b"wJalrXUtnFEMI");
        assert_eq!(aws.sts_endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(flags.serve.pod.in_pod());
        assert_eq!(flags.serve.pod.replica_name(), "keyhook-0");
        assert!(!PodArgs::default().in_pod());
        assert_eq!(PodArgs::default().replica_name(), "keyhook");
    }

    #[test]
    fn webhook_limits_default_as_the_flags_do() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let defaults = Flags::try_parse_from(["keyhook"]).unwrap().serve;
        assert_eq!(defaults.webhook_settings(), WebhookSettings::default());
        assert_eq!(
            defaults.connections.timeouts(),
            ConnectionTimeouts::default()
        );
    }

    #[test]
    fn injection_flags_have_their_defaults_and_name_themselves_when_wrong() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            injection: InjectionArgs,
        }
        let defaults = Flags::try_parse_from(["keyhook"]).unwrap().injection;
        assert_eq!(defaults.secrets_dir, PathBuf::from("./secrets"));
        let settings = defaults.refresh_settings();
        assert_eq!(settings.jitter, 0.1);
        assert_eq!(settings.catchup, Duration::from_secs(60));
        assert_eq!(settings.gc_grace, Duration::from_secs(15 * 60));
        let set =
            Flags::try_parse_from(["keyhook", "--refresh-jitter", "0.25", "--gc-grace", "1h"])
                .unwrap()
                .injection;
        assert_eq!(set.refresh_jitter, 0.25);
        assert_eq!(set.gc_grace, Duration::from_secs(3600));
        for (flag, value) in [
            ("--refresh-jitter", "60%"),
            ("--refresh-jitter", "lots"),
            ("--refresh-catchup", "0s"),
            ("--gc-grace", "soon"),
        ] {
            let error = Flags::try_parse_from(["keyhook", flag, value])
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} accepted"))
                .to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn service_names_follow_kubernetes_rules() {
        assert!(parse_dns_label("keyhook").is_ok());
        assert!(parse_dns_label("Keyhook").is_err());
        assert!(parse_dns_label("-keyhook").is_err());
        assert!(parse_dns_label("").is_err());
        assert!(parse_dns_name("cluster.local").is_ok());
        assert!(parse_dns_name("cluster..local").is_err());
    }

    #[test]
    fn extra_sans_are_ip_addresses_or_dns_names() {
        assert_eq!(
            "10.0.0.7".parse::<SubjectAltName>(),
            Ok(SubjectAltName::Ip("10.0.0.7".parse().unwrap()))
        );
        assert_eq!(
            "webhook.example.com".parse::<SubjectAltName>(),
            Ok(SubjectAltName::Dns("webhook.example.com".into()))
        );
        assert!("not a name!".parse::<SubjectAltName>().is_err());
    }
}
