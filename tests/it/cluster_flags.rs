//! The cluster flags of `keyhook serve`, and the settings they produce.

use clap::Parser;
use keyhook::{
    config::{CertMode, ServeArgs},
    server::cluster::ClusterSettings,
};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse(args: &[&str]) -> Result<ServeArgs, String> {
    Cli::try_parse_from(std::iter::once("keyhook").chain(args.iter().copied()))
        .map(|cli| cli.serve)
        .map_err(|e| e.to_string())
}

#[test]
fn a_cluster_defaults_to_self_managed_certificates_with_election() {
    let args = parse(&[]).unwrap();
    assert_eq!(args.cluster.cert_mode, CertMode::SelfManaged);
    assert_eq!(args.cluster.cert_secret, "keyhook-tls");
    assert!(args.cluster.leader_elect);

    let settings = ClusterSettings::from_args(&args);
    let lease = settings.lease.expect("election is on by default");
    assert_eq!(
        (lease.name.as_str(), lease.namespace.as_str()),
        ("keyhook", "keyhook")
    );
    assert_eq!(lease.lease_duration.as_secs(), 15);
    assert_eq!(lease.renew_deadline.as_secs(), 10);
    assert_eq!(lease.retry_period.as_secs(), 2);
    let sans: Vec<String> = settings
        .policy
        .sans
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sans,
        [
            "keyhook.keyhook.svc",
            "keyhook.keyhook.svc.cluster.local",
            "keyhook.keyhook",
            "keyhook"
        ],
        "no localhost in a cluster"
    );
}

#[test]
fn election_can_be_turned_off_for_a_single_replica() {
    for off in [&["--leader-elect=false"][..], &["--leader-elect", "false"]] {
        let args = parse(off).unwrap();
        assert!(!args.cluster.leader_elect);
        assert!(ClusterSettings::from_args(&args).lease.is_none());
    }
    assert!(parse(&["--leader-elect"]).unwrap().cluster.leader_elect);
}

#[test]
fn modes_and_the_secret_name_are_validated_naming_the_flag() {
    assert_eq!(
        parse(&["--cert-mode", "openshift"])
            .unwrap()
            .cluster
            .cert_mode,
        CertMode::Openshift
    );
    assert_eq!(
        parse(&["--cert-mode", "external"])
            .unwrap()
            .cluster
            .cert_mode,
        CertMode::External
    );
    let err = parse(&["--cert-mode", "vault"]).unwrap_err();
    assert!(err.contains("'--cert-mode <MODE>'"), "{err}");
    let err = parse(&["--cert-secret", "Keyhook_TLS"]).unwrap_err();
    assert!(err.contains("'--cert-secret <NAME>'"), "{err}");
    let args = parse(&[
        "--cert-secret",
        "webhook-tls",
        "--service-namespace",
        "secrets",
    ])
    .unwrap();
    let settings = ClusterSettings::from_args(&args);
    assert_eq!(settings.secret, "webhook-tls");
    assert_eq!(settings.lease.unwrap().namespace, "secrets");
}
