//! A development certificate authority: one CA per local stack, and
//! certificates it signs for loopback servers.
//!
//! Production certificates come from the operator's PKI (cert-manager in the
//! Helm chart); the lab makes its own so that every local NATS link runs
//! TLS exactly as production does. Keys are written readable by the owner
//! only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA's certificate on disk, and the means to sign more.
pub struct DevCa {
    /// PEM certificate clients trust (`--nats-ca`).
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A signed certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevCa {
    /// Makes a new CA named `name`, writing `<dir>/ca.pem` (its key stays in memory).
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(DevCa {
            cert: path,
            issuer: Issuer::new(params, key),
        })
    }

    /// Signs a certificate for loopback (`127.0.0.1`, `::1`, `localhost`)
    /// that serves as both server and client certificate, so servers that
    /// verify each other (NATS routes, gateways) can use one file pair.
    pub fn issue_loopback(&self, dir: &Path, name: &str) -> anyhow::Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])?;
        params.distinguished_name = distinguished_name(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "rallypoint development");
    name.push(DnType::CommonName, common_name);
    name
}

/// Creates a directory for secrets, usable by the owner only (0700). Fails
/// if it exists: credentials are made once and never overwritten.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Writes a secret readable and writable by the owner only: any old file is
/// removed first and the new one created 0600, so the secret is never
/// readable by others, not even for a moment, and an old file's wider mode
/// is never kept.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!("cannot replace {}: {e}", path.display()));
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use rustls::client::danger::ServerCertVerifier as _;

    use super::*;

    #[test]
    fn keys_are_private_and_certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::create(dir.path(), "test CA").unwrap();
        let server = ca.issue_loopback(dir.path(), "server").unwrap();
        let mode = std::fs::metadata(&server.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // rustls verifies the chain for 127.0.0.1, as a NATS client will.
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = std::fs::read(&ca.cert).unwrap();
        for cert in rustls_pemfile_certs(&ca_pem) {
            roots.add(cert).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let leaf = rustls_pemfile_certs(&std::fs::read(&server.cert).unwrap()).remove(0);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("the loopback certificate verifies against the CA");
        let other = DevCa::create(&dir.path().join("other"), "other CA").unwrap();
        let stranger = other.issue_loopback(dir.path(), "stranger").unwrap();
        let stranger = rustls_pemfile_certs(&std::fs::read(&stranger.cert).unwrap()).remove(0);
        assert!(
            verifier
                .verify_server_cert(
                    &stranger,
                    &[],
                    &name,
                    &[],
                    rustls::pki_types::UnixTime::now()
                )
                .is_err(),
            "a certificate from another CA must not verify"
        );
    }

    fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .map(|c| c.unwrap())
            .collect()
    }
}
