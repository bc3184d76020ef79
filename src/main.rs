//! The `keyhook` command line.

/// Every review is decoded into short-lived strings and maps on whichever
/// worker runs it and freed on another: glibc's allocator contends on its
/// arena locks for that under load (musl's is slower still), mimalloc's
/// per-thread heaps do not. Built with `no_thp`: it would otherwise madvise
/// its arena into huge pages, each of which counts as resident once touched.
/// docs/benchmarks.md has the measurements.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyhook::{
    apis,
    certs::{self, Inspection, SubjectAltName},
    config::{CertArgs, LogArgs, LogFormat, PodArgs, RunMode, ServeArgs, ServiceArgs},
    doctor,
    server::{Mode, Server},
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// keyhook: admission, conversion and TLS for External-Secrets-style webhooks.
#[derive(Debug, Parser)]
#[command(name = "keyhook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the webhooks (HTTPS) and health/metrics (HTTP).
    Serve(Box<ServeArgs>),
    /// Generate or inspect certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Check, against the current kubeconfig, that the apiserver can call every keyhook webhook; exits 1 on any finding, 2 when it cannot check.
    Doctor {
        /// The cluster's DNS domain, to check the SANs of served certificates.
        #[arg(
            long,
            env = "KEYHOOK_CLUSTER_DOMAIN",
            default_value = "cluster.local",
            value_name = "DOMAIN"
        )]
        cluster_domain: String,
        #[command(flatten)]
        pod: PodArgs,
    },
    /// Print the ExternalSecret, SecretStore and ClusterSecretStore CRDs (all versions, v1 stored).
    Crds {
        /// Write one file per CRD into this directory instead of printing a YAML stream.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Convert a YAML or JSON stream of external-secrets.io objects offline, changing only what
    /// the conversion changes; other kinds pass through byte for byte.
    #[command(override_usage = "keyhook convert --to <VERSION> [-f <FILE>]")]
    Convert {
        /// Target version: v1alpha1, v1beta1 or v1.
        #[arg(long, value_name = "VERSION")]
        to: apis::Version,
        /// Input file; without it (or with `-`) standard input is read.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a CA and a serving certificate with the full SAN list into --cert-dir.
    Generate {
        #[command(flatten)]
        certs: CertArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Show the certificates in --cert-dir and whether the apiserver would accept them; exits 1 if it would not, 2 when they cannot be read.
    Inspect {
        /// Directory holding tls.crt and ca.crt.
        #[arg(
            long,
            env = "KEYHOOK_CERT_DIR",
            default_value = "./certs",
            value_name = "DIR"
        )]
        cert_dir: std::path::PathBuf,
        #[command(flatten)]
        service: ServiceArgs,
    },
}

impl Command {
    /// The exit code when the command could not do its job. The checkers
    /// (`doctor`, `certs inspect`) exit 1 when they checked and found
    /// problems, so not being able to check gets a code of its own.
    fn could_not_run(&self) -> ExitCode {
        match self {
            Command::Doctor { .. } | Command::Certs(CertsCommand::Inspect { .. }) => {
                ExitCode::from(2)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let could_not_run = cli.command.could_not_run();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Certs(CertsCommand::Generate { certs, log }) => {
            init_logging(&log);
            generate(&certs)
        }
        Command::Certs(CertsCommand::Inspect { cert_dir, service }) => inspect(&cert_dir, &service),
        Command::Doctor {
            cluster_domain,
            pod,
        } => doctor(&cluster_domain, pod.in_pod()),
        Command::Crds { out } => print_crds(out.as_deref()),
        Command::Convert { to, file } => convert(to, file.as_deref()),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`keyhook crds | head -1`): it has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            could_not_run
        }
    }
}

/// The error and its causes on one line, each said once: many errors
/// (the OS's, kube's) already repeat their cause in their own message.
fn report(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(log: &LogArgs) {
    let filter = EnvFilter::new(log.filter());
    // Colour only for a person at a terminal, never into a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogOutput::line)
        .with_ansi(std::io::stdout().is_terminal());
    match log.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Standard output, for the log, until its reader goes away (`keyhook serve
/// | head`): then one line on stderr says so and the log is dropped. keyhook
/// keeps serving; without this, every event would add an error line.
struct LogOutput;

/// Whether the log's reader has gone away.
static LOG_READER_GONE: AtomicBool = AtomicBool::new(false);

impl LogOutput {
    /// The writer of one log event.
    fn line() -> Self {
        LogOutput
    }
}

impl std::io::Write for LogOutput {
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        if LOG_READER_GONE.load(Ordering::Relaxed) {
            return Ok(event.len());
        }
        match std::io::stdout().write(event) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                if !LOG_READER_GONE.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "keyhook: standard output was closed; the log is dropped from now on"
                    );
                }
                Ok(event.len())
            }
            written => written,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match std::io::stdout().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            flushed => flushed,
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.log);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mode = Mode::resolve(args.mode, args.pod.in_pod());
        tracing::info!(
            %mode,
            version = env!("CARGO_PKG_VERSION"),
            "keyhook starting {}",
            match (mode, args.mode) {
                (Mode::Standalone, RunMode::Auto) =>
                    "standalone: not in a pod, so no cluster is touched (--mode cluster uses your kubeconfig)",
                (Mode::Standalone, _) => "standalone (--mode standalone)",
                (Mode::Cluster, RunMode::Auto) => "in cluster mode: running in a pod",
                (Mode::Cluster, _) => "in cluster mode (--mode cluster)",
            }
        );
        for doubt in args.doubtful() {
            tracing::warn!("{doubt}");
        }
        let server = Server::bind(args, mode).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        server.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one
/// exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; keyhook will only stop when killed");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: no longer ready, draining"),
        _ = int.recv() => tracing::info!("SIGINT: no longer ready, draining"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without waiting for in-flight requests");
    std::process::exit(130);
}

fn generate(args: &CertArgs) -> anyhow::Result<ExitCode> {
    let sans: Vec<SubjectAltName> = args
        .service
        .identity()
        .san_list(&args.service.extra_sans, false);
    let (bundle, ensured) = certs::ensure_self_managed(
        &args.cert_dir,
        &sans,
        args.cert_validity,
        OffsetDateTime::now_utc(),
    )?;
    let path = |name: &str| args.cert_dir.join(name).display().to_string();
    let mut out = std::io::stdout().lock();
    match ensured {
        certs::Ensured::Reused => writeln!(
            out,
            "{} already holds a valid CA and a serving certificate for these names; nothing written",
            args.cert_dir.display()
        )?,
        certs::Ensured::Written { new_ca, reason } => {
            let mut written = vec![path(certs::TLS_CRT), path(certs::TLS_KEY)];
            if new_ca {
                written.extend([path(certs::CA_CRT), path(certs::CA_KEY)]);
            }
            writeln!(out, "wrote {} ({reason})", written.join(", "))?;
        }
    }
    // What is on disk, which after a reuse may be more than was asked for.
    let served = Inspection::parse(&bundle.tls_crt, &bundle.ca_crt)?;
    writeln!(out, "SANs: {}", served.leaf.sans.join(", "))?;
    writeln!(
        out,
        "trust {} (the caBundle is its base64)",
        path(certs::CA_CRT)
    )?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(dir: &Path, service: &ServiceArgs) -> anyhow::Result<ExitCode> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("reading {} (--cert-dir)", dir.join(name).display()))
    };
    let (tls_crt, ca_crt) = (read(certs::TLS_CRT)?, read(certs::CA_CRT)?);
    let inspection = Inspection::parse(&tls_crt, &ca_crt)?;
    let identity = service.identity();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let leaf = &inspection.leaf;
    let mut out = std::io::stdout().lock();
    writeln!(out, "subject:    {}", leaf.subject)?;
    writeln!(out, "issuer:     {}", leaf.issuer)?;
    writeln!(out, "SANs:       {}", leaf.sans.join(", "))?;
    writeln!(out, "not before: {}", certs::rfc3339(leaf.not_before))?;
    writeln!(
        out,
        "not after:  {} ({})",
        certs::rfc3339(leaf.not_after),
        remaining(leaf.not_after - now)
    )?;
    for ca in &inspection.cas {
        writeln!(
            out,
            "CA:         {} (until {})",
            ca.subject,
            certs::rfc3339(ca.not_after)
        )?;
    }
    writeln!(out)?;
    let mut rejected = false;
    let roots = certs::TrustRoots::from_pem(&ca_crt).context("reading ca.crt")?;
    for name in identity.dns_names() {
        match roots.verify(&inspection, &name) {
            Ok(()) => writeln!(out, "ok    {name}: verifies against ca.crt")?,
            Err(reason) => {
                writeln!(out, "FAIL  {name}: {reason}")?;
                // Only the apiserver's own name decides; the others inform.
                rejected |= name == identity.apiserver_name();
            }
        }
    }
    if rejected {
        writeln!(
            out,
            "\nthe kube-apiserver dials {} and would reject this certificate",
            identity.apiserver_name()
        )?;
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor(cluster_domain: &str, in_pod: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let lines = runtime.block_on(async {
        let (client, target) = keyhook::server::mode::connect(in_pod).await?;
        eprintln!("checking context {} ({})", target.context, target.server);
        let gathered = doctor::gather(&client).await?;
        anyhow::Ok(doctor::evaluate(
            &gathered,
            cluster_domain,
            OffsetDateTime::now_utc().unix_timestamp(),
        ))
    })?;
    let mut out = std::io::stdout().lock();
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    let findings = lines
        .iter()
        .filter(|l| matches!(l, doctor::Line::Finding { .. }))
        .count();
    if findings == 0 {
        writeln!(
            out,
            "\nno findings: the apiserver can call every keyhook webhook"
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "\n{findings} finding(s); fix them as shown above")?;
        Ok(ExitCode::FAILURE)
    }
}

fn remaining(seconds: i64) -> String {
    if seconds <= 0 {
        return "expired".into();
    }
    let secs = u64::try_from(seconds).unwrap_or_default();
    format!(
        "{} left",
        humantime::format_duration(Duration::from_secs(secs - secs % 60))
    )
}

fn print_crds(out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(dir) = out else {
        std::io::stdout()
            .lock()
            .write_all(apis::crds_yaml()?.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in apis::crds()? {
        let path = dir.join(apis::crds::file_name(&crd));
        let yaml = serde_saphyr::to_string(&crd).context("rendering a CRD as YAML")?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        writeln!(std::io::stdout().lock(), "wrote {}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn convert(to: apis::Version, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let input = match file {
        None => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
        Some(path) if path == Path::new("-") => {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        }
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    let converted = apis::convert_documents(&input, to)?;
    for warning in &converted.warnings {
        eprintln!("warning: {warning}");
    }
    std::io::Write::write_all(&mut std::io::stdout().lock(), converted.output.as_bytes())
        .context("writing standard output")?;
    Ok(ExitCode::SUCCESS)
}
