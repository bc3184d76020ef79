//! A certificate directory: reading it, writing it atomically, and keeping a
//! self-managed CA and serving certificate in it.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::Duration,
};

use time::OffsetDateTime;

use super::{
    CA_CRT, CA_KEY, CertificateAuthority, Error, Inspection, PemBundle, PrivateKeyPem,
    SubjectAltName, TLS_CRT, TLS_KEY, check::reissue_reason, generate::renewal_due,
};

/// Reads `tls.crt`, `tls.key`, `ca.crt` and, when present, `ca.key`.
pub fn read_bundle(dir: &Path) -> Result<PemBundle, Error> {
    let ca_key = match fs::read_to_string(dir.join(CA_KEY)) {
        Ok(pem) => Some(PrivateKeyPem::new(pem)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(dir.join(CA_KEY), e)),
    };
    Ok(PemBundle {
        tls_crt: read(dir, TLS_CRT)?,
        tls_key: PrivateKeyPem::new(read(dir, TLS_KEY)?),
        ca_crt: read(dir, CA_CRT)?,
        ca_key,
    })
}

fn read(dir: &Path, name: &str) -> Result<String, Error> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(|e| Error::io(path, e))
}

/// Writes a bundle into `dir` (created if missing). Every file is written to
/// a temporary name first and renamed into place, keys with mode 0600, so a
/// reader never sees a half-written file; `tls.crt` is renamed last. When
/// `dir` cannot be written, the error names the directory (never a temporary
/// file) and no temporary file is left behind.
pub fn write_bundle(dir: &Path, bundle: &PemBundle) -> Result<(), Error> {
    let unwritable = |source: io::Error| Error::Unwritable {
        dir: dir.to_path_buf(),
        reason: source.to_string(),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Unwritable {
            dir: dir.to_path_buf(),
            reason: "it is a file, not a directory".into(),
        });
    }
    fs::create_dir_all(dir).map_err(unwritable)?;
    let mut files = vec![(CA_CRT, bundle.ca_crt.as_str(), 0o644)];
    if let Some(ca_key) = &bundle.ca_key {
        files.push((CA_KEY, ca_key.expose(), 0o600));
    }
    files.push((TLS_KEY, bundle.tls_key.expose(), 0o600));
    files.push((TLS_CRT, bundle.tls_crt.as_str(), 0o644));

    let mut staged = Vec::with_capacity(files.len());
    let mut written = Ok(());
    for (name, content, mode) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        if let Err(e) = write_new_file(&tmp, content, mode) {
            let _ = fs::remove_file(&tmp);
            written = Err(e);
            break;
        }
        staged.push((tmp, dir.join(name)));
    }
    if let Err(e) = written {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
        return Err(unwritable(e));
    }
    let mut renamed = Ok(());
    for (tmp, path) in &staged {
        if renamed.is_ok() {
            renamed = fs::rename(tmp, path).map_err(unwritable);
        }
        if renamed.is_err() {
            let _ = fs::remove_file(tmp);
        }
    }
    renamed
}

fn write_new_file(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    // A stale temporary file from a crash may carry a wider mode: start over.
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// What [`ensure_self_managed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// CA and serving certificate were valid and kept.
    Reused,
    /// New certificates were written.
    Written {
        /// Whether the CA is new too (clients must trust the new `ca.crt`).
        new_ca: bool,
        /// Why, for the log.
        reason: String,
    },
}

/// Makes `dir` hold a CA and a serving certificate for `sans`, reusing what
/// is there while it is valid: the CA until a third of its life is left, the
/// serving certificate likewise and only while it is signed by that CA and
/// carries every name in `sans`.
pub fn ensure_self_managed(
    dir: &Path,
    sans: &[SubjectAltName],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<(PemBundle, Ensured), Error> {
    let unix_now = now.unix_timestamp();
    let existing = read_bundle(dir).ok();

    let reusable_ca = existing.as_ref().and_then(|b| reusable_ca(b, unix_now));
    let (ca, new_ca) = match reusable_ca {
        Some(ca) => (ca, false),
        None => (CertificateAuthority::generate(now)?, true),
    };

    let serving_problem = match &existing {
        _ if new_ca => Some("a new CA was generated".to_string()),
        None => Some(format!("{} has no complete certificate set", dir.display())),
        Some(bundle) => reissue_reason(bundle, ca.cert_pem(), sans, unix_now),
    };
    let Some(reason) = serving_problem else {
        // Reuse only reaches here with an existing bundle.
        let bundle = existing
            .ok_or_else(|| Error::parse(dir.display().to_string(), "vanished while reading"))?;
        return Ok((bundle, Ensured::Reused));
    };

    let (tls_crt, tls_key) = ca.issue_serving(sans, validity, now)?;
    let bundle = PemBundle {
        tls_crt,
        tls_key,
        ca_crt: ca.cert_pem().to_string(),
        ca_key: Some(ca.key_pem().clone()),
    };
    write_bundle(dir, &bundle)?;
    Ok((bundle, Ensured::Written { new_ca, reason }))
}

fn reusable_ca(bundle: &PemBundle, now: i64) -> Option<CertificateAuthority> {
    let ca_key = bundle.ca_key.as_ref()?;
    let ca = CertificateAuthority::from_pem(&bundle.ca_crt, ca_key).ok()?;
    let info = Inspection::parse(&bundle.ca_crt, &bundle.ca_crt).ok()?.leaf;
    let usable =
        info.is_ca && info.not_before <= now && !renewal_due(info.not_before, info.not_after, now);
    usable.then_some(ca)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::certs::ServiceIdentity;

    fn sans() -> Vec<SubjectAltName> {
        ServiceIdentity {
            name: "keyhook".into(),
            namespace: "keyhook".into(),
            cluster_domain: "cluster.local".into(),
        }
        .san_list(&[], true)
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn generates_once_then_reuses_until_a_third_of_life_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (first, ensured) = ensure_self_managed(dir.path(), &sans(), 30 * DAY, now).unwrap();
        assert!(matches!(ensured, Ensured::Written { new_ca: true, .. }));

        let (again, ensured) =
            ensure_self_managed(dir.path(), &sans(), 30 * DAY, now + 19 * DAY).unwrap();
        assert_eq!(ensured, Ensured::Reused);
        assert_eq!(again, first);

        let (renewed, ensured) =
            ensure_self_managed(dir.path(), &sans(), 30 * DAY, now + 21 * DAY).unwrap();
        assert!(
            matches!(ensured, Ensured::Written { new_ca: false, ref reason } if reason.contains("third"))
        );
        assert_eq!(renewed.ca_crt, first.ca_crt, "the CA is reused while valid");
        assert_ne!(renewed.tls_crt, first.tls_crt);
    }

    #[test]
    fn a_new_extra_san_reissues_the_serving_cert() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        ensure_self_managed(dir.path(), &sans(), 30 * DAY, now).unwrap();
        let mut wider = sans();
        wider.push(SubjectAltName::Dns("hooks.example.com".into()));
        let (_, ensured) = ensure_self_managed(dir.path(), &wider, 30 * DAY, now).unwrap();
        assert!(
            matches!(ensured, Ensured::Written { new_ca: false, ref reason } if reason.contains("hooks.example.com"))
        );
    }

    #[test]
    fn keys_are_private_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        ensure_self_managed(dir.path(), &sans(), DAY, OffsetDateTime::now_utc()).unwrap();
        for (name, mode) in [
            (TLS_KEY, 0o600),
            (CA_KEY, 0o600),
            (TLS_CRT, 0o644),
            (CA_CRT, 0o644),
        ] {
            let meta = fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn a_corrupt_key_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        ensure_self_managed(dir.path(), &sans(), DAY, now).unwrap();
        fs::write(dir.path().join(TLS_KEY), "not a key").unwrap();
        let (_, ensured) = ensure_self_managed(dir.path(), &sans(), DAY, now).unwrap();
        assert!(
            matches!(ensured, Ensured::Written { new_ca: false, ref reason } if reason.contains("tls.key"))
        );
    }
}
