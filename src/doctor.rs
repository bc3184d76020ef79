//! `keyhook doctor`: checks, against the current kubeconfig, that the
//! apiserver can call every webhook keyhook serves, and says exactly what to
//! fix when it cannot.
//!
//! Gathering (the API, dialing the endpoints like the apiserver does) is
//! kept apart from judging ([`evaluate`]), which is a pure function of what
//! was gathered, so every finding is testable from recorded objects.

use std::{collections::BTreeMap, fmt, net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine;
use k8s_openapi::{
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Service,
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use kube::{Api, Client, api::ListParams};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{
        CryptoProvider, ring::default_provider, verify_tls12_signature, verify_tls13_signature,
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::certs::{
    Inspection, ServiceIdentity, TrustRoots,
    cluster::{
        ca_bundle::{self, ManagedObject, ServiceRef},
        secret::ApiError,
    },
    rfc3339,
};

/// Certificates closer than this to their end are reported.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The API group of the CRDs keyhook serves; an APIService claiming it, or
/// a group under it, hijacks it from the CRDs.
const SERVED_GROUP_SUFFIX: &str = crate::apis::GROUP;

/// Why a Service port was not dialed when it has ports but no ready endpoint.
const NO_READY_ENDPOINT: &str = "it has no ready endpoints";

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Something checked and fine.
    Ok(String),
    /// Something wrong, and what to do about it.
    Finding {
        /// What is wrong, naming the object.
        problem: String,
        /// Exactly what to do.
        fix: String,
    },
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Ok(text) => write!(f, "ok    {text}"),
            Line::Finding { problem, fix } => write!(f, "FAIL  {problem}\n      fix: {fix}"),
        }
    }
}

/// What dialing one Service's endpoints found.
#[derive(Debug, Clone)]
pub struct ServiceProbe {
    /// Ready endpoint addresses with the port the apiserver would dial.
    pub ready_endpoints: Vec<SocketAddr>,
    /// The certificate chain the first ready endpoint served (leaf first,
    /// PEM), or why it could not be had.
    pub served: Result<String, String>,
}

/// An APIService in one of the groups keyhook's CRDs serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignApiService {
    /// Its name, e.g. `v1beta1.external-secrets.io`.
    pub name: String,
    /// `namespace/name` of the Service it sends the group to, if any.
    pub service: Option<String>,
}

/// Everything the doctor looked at.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// The managed webhook configurations and CRDs.
    pub objects: Vec<ManagedObject>,
    /// Each Service port they call, and what it served.
    pub services: BTreeMap<ServiceRef, ServiceProbe>,
    /// APIServices claiming a group keyhook serves.
    pub api_services: Vec<ForeignApiService>,
}

/// Judges what was gathered at `now` (Unix seconds); `cluster_domain`
/// completes the names a serving certificate must carry.
pub fn evaluate(gathered: &Gathered, cluster_domain: &str, now: i64) -> Vec<Line> {
    let mut lines = Vec::new();
    if gathered.objects.iter().all(|o| o.client_configs.is_empty()) {
        lines.push(Line::Finding {
            problem: format!(
                "no webhook configuration or CRD with a conversion webhook is labelled {}",
                ca_bundle::PART_OF_SELECTOR
            ),
            fix: "install keyhook's chart, or label the objects that call keyhook with app.kubernetes.io/part-of=keyhook".into(),
        });
    }
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    for object in &gathered.objects {
        for config in &object.client_configs {
            let place = format!("{} {}", object.reference, config.location());
            let Some(service) = &config.service else {
                lines.push(Line::Ok(format!("{place} calls a URL; not checked")));
                continue;
            };
            let ServiceRef {
                namespace,
                name,
                port,
            } = service;
            let identity = ServiceIdentity {
                name: name.clone(),
                namespace: namespace.clone(),
                cluster_domain: cluster_domain.to_string(),
            };
            let dialed = identity.apiserver_name();
            let Some(bundle) = config.ca_bundle.as_deref().filter(|b| !b.trim().is_empty()) else {
                lines.push(Line::Finding {
                    problem: format!("{place} has no caBundle; the apiserver cannot trust {dialed}"),
                    fix: "run keyhook with --cert-mode self-managed (it injects the bundle), or annotate the object for your injector (service.beta.openshift.io/inject-cabundle: \"true\" or cert-manager.io/inject-ca-from)".into(),
                });
                continue;
            };
            let Some(probe) = gathered.services.get(service) else {
                continue;
            };
            if probe.ready_endpoints.is_empty() {
                let why = probe
                    .served
                    .as_ref()
                    .err()
                    .map_or(NO_READY_ENDPOINT, String::as_str);
                lines.push(Line::Finding {
                    problem: format!("{place} calls Service {namespace}/{name} port {port}: {why}"),
                    fix: format!("check the Service has port {port} and the keyhook pods are ready: kubectl -n {namespace} get service {name}; kubectl -n {namespace} get pods,endpointslices -l kubernetes.io/service-name={name}; kubectl -n {namespace} describe pods"),
                });
                continue;
            }
            let served = match &probe.served {
                Ok(chain) => chain,
                Err(why) => {
                    lines.push(Line::Finding {
                        problem: format!("{place}: could not fetch the certificate {dialed} serves: {why}"),
                        fix: "run the doctor where the pod network is reachable (e.g. `kubectl run` it in the cluster), or check the pods' logs".into(),
                    });
                    continue;
                }
            };
            let inspection = match Inspection::parse(served, served) {
                Ok(inspection) => inspection,
                Err(e) => {
                    lines.push(Line::Finding {
                        problem: format!("{place}: {dialed} serves an unreadable certificate: {e}"),
                        fix: "check the certificate keyhook loads (keyhook certs inspect, or the Secret keyhook-tls)".into(),
                    });
                    continue;
                }
            };
            lines.extend(judge_served(
                &place,
                &identity,
                &inspection,
                bundle,
                at,
                now,
            ));
        }
    }
    for api_service in &gathered.api_services {
        lines.push(Line::Finding {
            problem: format!(
                "APIService {} claims a group keyhook's CRDs serve{} (left by an earlier OLM install?); the apiserver sends that group there instead of to the CRDs",
                api_service.name,
                api_service
                    .service
                    .as_deref()
                    .map(|s| format!(", forwarding it to Service {s}"))
                    .unwrap_or_default()
            ),
            fix: format!("kubectl delete apiservice {}", api_service.name),
        });
    }
    lines
}

fn judge_served(
    place: &str,
    identity: &ServiceIdentity,
    served: &Inspection,
    bundle: &str,
    at: UnixTime,
    now: i64,
) -> Vec<Line> {
    let dialed = identity.apiserver_name();
    let mut lines = Vec::new();
    let trust = TrustRoots::from_pem(bundle)
        .map_err(|e| format!("the caBundle is unreadable: {e}"))
        .and_then(|roots| roots.verify_at(served, &dialed, at));
    match trust {
        Ok(()) => lines.push(Line::Ok(format!("{place}: the caBundle trusts what {dialed} serves"))),
        Err(why) => lines.push(Line::Finding {
            problem: format!("{place}: the caBundle does not trust the certificate {dialed} serves: {why}"),
            fix: "with --cert-mode self-managed, check that one replica leads (kubectl -n <ns> get lease keyhook) and its logs; with cert-manager or OpenShift, check the injection annotation and that the injected CA issued the mounted certificate".into(),
        }),
    }
    let missing: Vec<String> = identity
        .dns_names()
        .into_iter()
        .filter(|name| served.covers(name).is_err())
        .collect();
    if !missing.is_empty() {
        lines.push(Line::Finding {
            problem: format!("{place}: the served certificate lacks SANs {}", missing.join(", ")),
            fix: "re-issue it with every Service name: keyhook does so itself in self-managed mode; for cert-manager list them in the Certificate's dnsNames".into(),
        });
    }
    let leaf = &served.leaf;
    let left = leaf.not_after - now;
    if left <= 0 {
        lines.push(Line::Finding {
            problem: format!("{place}: the served certificate expired at {}", rfc3339(leaf.not_after)),
            fix: "renew it: keyhook renews its own at a third of its life; otherwise renew it with its issuer".into(),
        });
    } else if u64::try_from(left).is_ok_and(|l| l < EXPIRY_WARNING.as_secs()) {
        lines.push(Line::Finding {
            problem: format!("{place}: the served certificate expires soon, at {}", rfc3339(leaf.not_after)),
            fix: "check why it was not renewed (keyhook renews at a third of its life; check the leader's logs or the issuer)".into(),
        });
    } else {
        lines.push(Line::Ok(format!(
            "{place}: the served certificate is valid until {}",
            rfc3339(leaf.not_after)
        )));
    }
    lines
}

/// Lists the managed objects and APIServices, and dials the first ready
/// endpoint of each Service port they call with SNI `<svc>.<ns>.svc`, as
/// the apiserver does.
pub async fn gather(client: &Client) -> Result<Gathered, ApiError> {
    let labelled = ListParams::default().labels(ca_bundle::PART_OF_SELECTOR);
    let list_error = |what: &str| {
        let what = what.to_string();
        move |e| ApiError::from_kube("listing", what, e)
    };
    let mut objects: Vec<ManagedObject> = Vec::new();
    for o in Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&labelled)
        .await
        .map_err(list_error("MutatingWebhookConfigurations"))?
    {
        objects.push(ManagedObject::from_mutating(&o));
    }
    for o in Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list(&labelled)
        .await
        .map_err(list_error("ValidatingWebhookConfigurations"))?
    {
        objects.push(ManagedObject::from_validating(&o));
    }
    for o in Api::<CustomResourceDefinition>::all(client.clone())
        .list(&labelled)
        .await
        .map_err(list_error("CustomResourceDefinitions"))?
    {
        objects.push(ManagedObject::from_crd(&o));
    }

    let mut services = BTreeMap::new();
    let wanted: Vec<ServiceRef> = objects
        .iter()
        .flat_map(|o| o.client_configs.iter().filter_map(|c| c.service.clone()))
        .collect();
    for service in wanted {
        if services.contains_key(&service) {
            continue;
        }
        let probe = probe_service(client, &service).await?;
        services.insert(service, probe);
    }

    let api_services = Api::<APIService>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(list_error("APIServices"))?
        .into_iter()
        .filter_map(|a| {
            let spec = a.spec?;
            let group = spec.group.unwrap_or_default();
            (group == SERVED_GROUP_SUFFIX || group.ends_with(&format!(".{SERVED_GROUP_SUFFIX}")))
                .then(|| ForeignApiService {
                    name: a.metadata.name.unwrap_or_default(),
                    service: spec.service.map(|s| {
                        format!(
                            "{}/{}",
                            s.namespace.unwrap_or_default(),
                            s.name.unwrap_or_default()
                        )
                    }),
                })
        })
        .collect();
    Ok(Gathered {
        objects,
        services,
        api_services,
    })
}

async fn probe_service(client: &Client, service: &ServiceRef) -> Result<ServiceProbe, ApiError> {
    let ServiceRef {
        namespace,
        name,
        port,
    } = service;
    let object = format!("Service {namespace}/{name}");
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| ApiError::from_kube("reading", object.clone(), e))?;
    let Some(service) = service else {
        return Ok(ServiceProbe {
            ready_endpoints: Vec::new(),
            served: Err(format!("{object} does not exist")),
        });
    };
    // The apiserver dials the Service port the webhook names (443 unless it
    // says otherwise); the EndpointSlice port of the same name is the pod's.
    // An unnamed port is `""` in EndpointSlices.
    let service_port = service
        .spec
        .and_then(|s| s.ports)
        .into_iter()
        .flatten()
        .find(|p| i32::from(*port) == p.port);
    let Some(service_port) = service_port else {
        return Ok(ServiceProbe {
            ready_endpoints: Vec::new(),
            served: Err(format!("the Service has no port {port}")),
        });
    };
    let port_name = service_port.name.unwrap_or_default();
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
        .map_err(|e| ApiError::from_kube("listing EndpointSlices of", object.clone(), e))?;
    let mut ready = Vec::new();
    for slice in slices {
        let pod_port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(pod_port) = pod_port else { continue };
        for endpoint in slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(true) {
                continue;
            }
            ready.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .map(|ip| SocketAddr::new(ip, pod_port)),
            );
        }
    }
    let served = match ready.first() {
        Some(addr) => fetch_chain(*addr, &format!("{name}.{namespace}.svc")).await,
        None => Err(NO_READY_ENDPOINT.into()),
    };
    Ok(ServiceProbe {
        ready_endpoints: ready,
        served,
    })
}

/// Completes a TLS handshake with `addr` for `sni` and returns the chain
/// served, PEM. Trust is judged afterwards against each caBundle.
pub async fn fetch_chain(addr: SocketAddr, sni: &str) -> Result<String, String> {
    let provider = Arc::new(default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordOnly(provider)))
        .with_no_client_auth();
    let server_name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))
    };
    let tls = tokio::time::timeout(DIAL_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("{addr} did not answer within {}s", DIAL_TIMEOUT.as_secs()))??;
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    if chain.is_empty() {
        return Err(format!("{addr} presented no certificate"));
    }
    Ok(chain.iter().map(der_to_pem).collect())
}

fn der_to_pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Accepts any chain so that it can be judged against each caBundle after
/// the handshake; handshake signatures are still verified.
#[derive(Debug)]
struct RecordOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
