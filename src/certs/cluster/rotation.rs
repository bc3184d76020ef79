//! What the certificate controller does next, decided from the Secret, the
//! injected bundles and the time: a pure function, so every step of the CA
//! overlap dance is testable without a cluster.
//!
//! The serving certificate is renewed when a third of its life is left, by
//! the CA that signs now. The CA is renewed when a third of its life is left,
//! in three steps that never leave a client without trust:
//!
//! 1. a new CA is generated and `ca.crt` becomes old CA + new CA;
//! 2. once every managed object carries that bundle, the serving certificate
//!    is re-issued by the new CA;
//! 3. once the last certificate the old CA signed has expired, the old CA
//!    leaves `ca.crt`.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::secret::{RotationPhase, StoredCerts};
use crate::certs::{
    CertificateAuthority, Error, Inspection, PemBundle, PrivateKeyPem, SubjectAltName,
    check::reissue_reason,
    generate::{renewal_due, renewal_time},
};
use crate::metrics::CertKind;

/// What the controller issues.
#[derive(Debug, Clone)]
pub struct IssuePolicy {
    /// Every name the serving certificate must carry.
    pub sans: Vec<SubjectAltName>,
    /// Lifetime of a serving certificate (cut short to its CA's).
    pub serving_validity: Duration,
    /// Lifetime of a CA.
    pub ca_validity: Duration,
}

/// The next step.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing to write; look again at `next_check` (Unix seconds) or
    /// sooner when the Secret or a managed object changes.
    Keep {
        /// When something next falls due.
        next_check: i64,
        /// What the controller is waiting for, for the log.
        waiting_for: String,
    },
    /// Write these certificates to the Secret.
    Write {
        /// The new content.
        certs: StoredCerts,
        /// Which certificates are new.
        issued: Vec<CertKind>,
        /// Why, for the log.
        reason: String,
    },
}

/// Decides the next step from the Secret (`None` when missing, `Err` when
/// unreadable), whether every managed object carries its `ca.crt`
/// (`all_injected`, read from the API), and `now`.
pub fn plan(
    current: Option<Result<&StoredCerts, &str>>,
    all_injected: bool,
    policy: &IssuePolicy,
    now: OffsetDateTime,
) -> Result<Plan, Error> {
    let stored = match current {
        None => return fresh(policy, now, "the Secret does not exist".into()),
        Some(Err(problem)) => {
            return fresh(policy, now, format!("the Secret is broken ({problem})"));
        }
        Some(Ok(stored)) => stored,
    };
    let unix = now.unix_timestamp();
    let signing = match signing_ca(&stored.bundle) {
        Ok(signing) => signing,
        Err(problem) => return fresh(policy, now, format!("its CA is unusable ({problem})")),
    };
    if unix < signing.not_before || unix >= signing.not_after {
        return fresh(policy, now, "its CA is outside its validity window".into());
    }
    let serving_problem = reissue_reason(&stored.bundle, signing.ca.cert_pem(), &policy.sans, unix);
    let serving_renewal = serving_renewal_time(&stored.bundle).unwrap_or(unix);
    let reissue = |phase: RotationPhase, reason: String| -> Result<Plan, Error> {
        let (tls_crt, tls_key) = issue(&signing, policy, now)?;
        Ok(Plan::Write {
            certs: StoredCerts {
                bundle: PemBundle {
                    tls_crt,
                    tls_key,
                    ..stored.bundle.clone()
                },
                phase,
            },
            issued: vec![CertKind::Serving],
            reason,
        })
    };

    match stored.phase {
        RotationPhase::Stable => {
            if renewal_due(signing.not_before, signing.not_after, unix) {
                // Step 1: publish a new CA next to the old one.
                let new_ca = CertificateAuthority::generate_valid_for(now, policy.ca_validity)?;
                let ca_crt = format!(
                    "{}{}",
                    pem_block(signing.ca.cert_pem()),
                    pem_block(new_ca.cert_pem())
                );
                return Ok(Plan::Write {
                    certs: StoredCerts {
                        bundle: PemBundle {
                            ca_crt,
                            ca_key: Some(new_ca.key_pem().clone()),
                            ..stored.bundle.clone()
                        },
                        phase: RotationPhase::NewCaPublished,
                    },
                    issued: vec![CertKind::Ca],
                    reason: "the CA has a third of its life left: publishing a new CA next to it"
                        .into(),
                });
            }
            if let Some(problem) = serving_problem {
                return reissue(RotationPhase::Stable, problem);
            }
            Ok(Plan::Keep {
                next_check: serving_renewal
                    .min(renewal_time(signing.not_before, signing.not_after)),
                waiting_for: "the next renewal".into(),
            })
        }
        RotationPhase::NewCaPublished => {
            if all_injected {
                // Step 2: every client trusts the new CA; switch to it.
                let retire_old_ca_after =
                    Inspection::parse(&stored.bundle.tls_crt, &stored.bundle.ca_crt)
                        .map_or(unix, |old| old.leaf.not_after.max(unix));
                return reissue(
                    RotationPhase::ServingSwitched { retire_old_ca_after },
                    "every managed object trusts the new CA: switching the serving certificate to it".into(),
                );
            }
            Ok(Plan::Keep {
                // Nothing falls due by the clock; an injection wakes us.
                next_check: serving_renewal.max(unix + 3600),
                waiting_for: "every managed object to carry the two-CA bundle".into(),
            })
        }
        RotationPhase::ServingSwitched {
            retire_old_ca_after,
        } => {
            if unix >= retire_old_ca_after {
                // Step 3: the old CA signed nothing that is still valid.
                return Ok(Plan::Write {
                    certs: StoredCerts {
                        bundle: PemBundle {
                            ca_crt: pem_block(signing.ca.cert_pem()),
                            ..stored.bundle.clone()
                        },
                        phase: RotationPhase::Stable,
                    },
                    issued: Vec::new(),
                    reason: "the last certificate of the old CA has expired: removing the old CA from the bundle".into(),
                });
            }
            if let Some(problem) = serving_problem {
                return reissue(stored.phase, problem);
            }
            Ok(Plan::Keep {
                next_check: retire_old_ca_after.min(serving_renewal),
                waiting_for: "the old CA's last certificate to expire".into(),
            })
        }
    }
}

/// A new CA and serving certificate: the Secret is missing or beyond repair.
fn fresh(policy: &IssuePolicy, now: OffsetDateTime, why: String) -> Result<Plan, Error> {
    let ca = CertificateAuthority::generate_valid_for(now, policy.ca_validity)?;
    let signing = SigningCa {
        not_before: now.unix_timestamp(),
        not_after: (now + policy.ca_validity).unix_timestamp(),
        ca,
    };
    let (tls_crt, tls_key) = issue(&signing, policy, now)?;
    Ok(Plan::Write {
        certs: StoredCerts {
            bundle: PemBundle {
                tls_crt,
                tls_key,
                ca_crt: pem_block(signing.ca.cert_pem()),
                ca_key: Some(signing.ca.key_pem().clone()),
            },
            phase: RotationPhase::Stable,
        },
        issued: vec![CertKind::Ca, CertKind::Serving],
        reason: format!("{why}: generating a CA and a serving certificate"),
    })
}

/// The CA whose key is `ca.key`, found in `ca.crt` by its public key.
struct SigningCa {
    ca: CertificateAuthority,
    not_before: i64,
    not_after: i64,
}

fn signing_ca(bundle: &PemBundle) -> Result<SigningCa, String> {
    let key = bundle.ca_key.as_ref().ok_or("ca.key is missing")?;
    let key_pair = rcgen::KeyPair::from_pem(key.expose()).map_err(|e| format!("ca.key: {e}"))?;
    for block in pem_blocks(&bundle.ca_crt) {
        let Ok(der) = rustls_pki_types::CertificateDer::from_pem_slice(block.as_bytes()) else {
            continue;
        };
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            continue;
        };
        if cert.public_key().subject_public_key.data.as_ref() == key_pair.public_key_raw() {
            let ca = CertificateAuthority::from_pem(&block, key).map_err(|e| e.to_string())?;
            return Ok(SigningCa {
                ca,
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            });
        }
    }
    Err("no certificate in ca.crt belongs to ca.key".into())
}

use rustls_pki_types::pem::PemObject;

/// Issues a serving certificate that ends no later than its CA.
fn issue(
    signing: &SigningCa,
    policy: &IssuePolicy,
    now: OffsetDateTime,
) -> Result<(String, PrivateKeyPem), Error> {
    let ca_left = u64::try_from(signing.not_after - now.unix_timestamp()).unwrap_or(0);
    let validity = policy.serving_validity.min(Duration::from_secs(ca_left));
    signing.ca.issue_serving(&policy.sans, validity, now)
}

fn serving_renewal_time(bundle: &PemBundle) -> Option<i64> {
    let inspection = Inspection::parse(&bundle.tls_crt, &bundle.ca_crt).ok()?;
    Some(renewal_time(
        inspection.leaf.not_before,
        inspection.leaf.not_after,
    ))
}

/// The `CERTIFICATE` blocks of a PEM text, each ending in a newline.
pub(crate) fn pem_blocks(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter_map(|chunk| {
            let start = chunk.find("-----BEGIN CERTIFICATE-----")?;
            chunk
                .ends_with(END)
                .then(|| format!("{}\n", &chunk[start..]))
        })
        .collect()
}

fn pem_block(pem: &str) -> String {
    pem_blocks(pem).concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> IssuePolicy {
        IssuePolicy {
            sans: vec![SubjectAltName::Dns("keyhook.keyhook.svc".into())],
            serving_validity: HOUR,
            ca_validity: 3 * HOUR,
        }
    }

    fn written(plan: Plan) -> (StoredCerts, Vec<CertKind>) {
        match plan {
            Plan::Write { certs, issued, .. } => (certs, issued),
            Plan::Keep { waiting_for, .. } => panic!("expected a write, got keep ({waiting_for})"),
        }
    }

    #[test]
    fn a_missing_secret_gets_a_ca_and_a_serving_cert() {
        let now = OffsetDateTime::now_utc();
        let (certs, issued) = written(plan(None, false, &policy(), now).unwrap());
        assert_eq!(issued, [CertKind::Ca, CertKind::Serving]);
        assert_eq!(certs.phase, RotationPhase::Stable);
        assert_eq!(pem_blocks(&certs.bundle.ca_crt).len(), 1);
        let plan = plan(Some(Ok(&certs)), true, &policy(), now).unwrap();
        assert!(matches!(plan, Plan::Keep { .. }), "{plan:?}");
    }

    #[test]
    fn the_ca_overlap_dance_runs_in_three_steps() {
        let t0 = OffsetDateTime::now_utc();
        let (mut certs, _) = written(plan(None, false, &policy(), t0).unwrap());
        let first_ca = certs.bundle.ca_crt.clone();

        // Just before 2h in, the CA has a third of its life left: step 1.
        let t1 = t0 + 2 * HOUR - Duration::from_secs(60);
        // (the serving cert was renewed by then; renew it here first)
        let (renewed, issued) =
            written(plan(Some(Ok(&certs)), true, &policy(), t0 + HOUR).unwrap());
        assert_eq!(issued, [CertKind::Serving]);
        certs = renewed;
        let (step1, issued) = written(plan(Some(Ok(&certs)), true, &policy(), t1).unwrap());
        assert_eq!(issued, [CertKind::Ca]);
        assert_eq!(step1.phase, RotationPhase::NewCaPublished);
        assert_eq!(
            step1.bundle.tls_crt, certs.bundle.tls_crt,
            "serving cert untouched in step 1"
        );
        let blocks = pem_blocks(&step1.bundle.ca_crt);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], first_ca);

        // Not injected everywhere yet: wait.
        assert!(matches!(
            plan(Some(Ok(&step1)), false, &policy(), t1).unwrap(),
            Plan::Keep { .. }
        ));

        // Step 2 once injected.
        let (step2, issued) = written(plan(Some(Ok(&step1)), true, &policy(), t1).unwrap());
        assert_eq!(issued, [CertKind::Serving]);
        let old_leaf = Inspection::parse(&certs.bundle.tls_crt, &first_ca)
            .unwrap()
            .leaf;
        assert_eq!(
            step2.phase,
            RotationPhase::ServingSwitched {
                retire_old_ca_after: old_leaf.not_after
            }
        );
        let new_leaf = Inspection::parse(&step2.bundle.tls_crt, &step2.bundle.ca_crt).unwrap();
        assert!(new_leaf.trusted_by(&blocks[1], t1.unix_timestamp()).is_ok());

        // Step 3 after the old CA's last cert expired.
        let t3 = OffsetDateTime::from_unix_timestamp(old_leaf.not_after).unwrap();
        assert!(matches!(
            plan(
                Some(Ok(&step2)),
                true,
                &policy(),
                t3 - Duration::from_secs(1)
            )
            .unwrap(),
            Plan::Keep { .. }
        ));
        let (step3, issued) = written(plan(Some(Ok(&step2)), true, &policy(), t3).unwrap());
        assert!(issued.is_empty());
        assert_eq!(step3.phase, RotationPhase::Stable);
        assert_eq!(step3.bundle.ca_crt, blocks[1]);
        assert_eq!(step3.bundle.tls_crt, step2.bundle.tls_crt);
    }

    #[test]
    fn a_broken_secret_is_repaired() {
        let now = OffsetDateTime::now_utc();
        let (certs, issued) = written(
            plan(
                Some(Err("Secret key tls.key: missing")),
                false,
                &policy(),
                now,
            )
            .unwrap(),
        );
        assert_eq!(issued.len(), 2);
        let mut broken = certs.clone();
        broken.bundle.tls_key = PrivateKeyPem::new("garbage".into());
        let (repaired, issued) = written(plan(Some(Ok(&broken)), true, &policy(), now).unwrap());
        assert_eq!(issued, [CertKind::Serving], "a valid CA is kept");
        assert_eq!(repaired.bundle.ca_crt, certs.bundle.ca_crt);
    }

    #[test]
    fn pem_blocks_split_a_bundle() {
        let now = OffsetDateTime::now_utc();
        let a = CertificateAuthority::generate(now).unwrap();
        let b = CertificateAuthority::generate(now).unwrap();
        let bundle = format!("{}\n{}", a.cert_pem(), b.cert_pem());
        let blocks = pem_blocks(&bundle);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].trim(), a.cert_pem().trim());
    }
}
