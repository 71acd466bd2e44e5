//! The WebTransport server identity.
//!
//! Production: a certificate chain and key from PEM files (`--tls-cert`,
//! `--tls-key`), e.g. from cert-manager. Development: a self-signed ECDSA P-256
//! certificate valid for 13 days — browsers accept such a certificate through
//! `serverCertificateHashes` only when it is ECDSA and valid for at most 14
//! days — whose SHA-256 is served at `/cert-hash`.

use std::time::Duration;

use wtransport::Identity;

use crate::config::TlsConfig;

/// Validity of the development certificate (browsers allow at most 14 days).
pub const DEV_CERT_VALIDITY_DAYS: u32 = 13;

pub struct ServerIdentity {
    pub identity: Identity,
    /// SHA-256 of the leaf certificate.
    pub cert_hash: [u8; 32],
    pub self_signed: bool,
}

pub async fn load(config: &TlsConfig) -> anyhow::Result<ServerIdentity> {
    let (identity, self_signed) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let identity = Identity::load_pemfiles(cert, key).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot load the TLS identity from {} and {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            (identity, false)
        }
        _ => (development_identity(config).await?, true),
    };
    let leaf = identity
        .certificate_chain()
        .as_slice()
        .first()
        .ok_or_else(|| anyhow::anyhow!("the TLS certificate chain is empty"))?;
    let cert_hash = *leaf.hash().as_ref();
    Ok(ServerIdentity {
        identity,
        cert_hash,
        self_signed,
    })
}

/// A development identity: reused from `--dev-identity-dir` while it is younger
/// than `DEV_CERT_VALIDITY_DAYS - 1` days, else made anew (and saved there).
async fn development_identity(config: &TlsConfig) -> anyhow::Result<Identity> {
    let reuse_for = Duration::from_secs(u64::from(DEV_CERT_VALIDITY_DAYS - 1) * 86_400);
    if let Some(dir) = &config.dev_identity_dir {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let fresh = std::fs::metadata(&cert)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < reuse_for);
        if fresh && let Ok(identity) = Identity::load_pemfiles(&cert, &key).await {
            return Ok(identity);
        }
    }
    let identity = Identity::self_signed_builder()
        .subject_alt_names(&config.dev_cert_names)
        .from_now_utc()
        .validity_days(DEV_CERT_VALIDITY_DAYS)
        .build()
        .map_err(|e| anyhow::anyhow!("--dev-cert-names has an invalid name: {e}"))?;
    if let Some(dir) = &config.dev_identity_dir {
        let save = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let leaf = &identity.certificate_chain().as_slice()[0];
            std::fs::write(dir.join("cert.pem"), leaf.to_pem())?;
            std::fs::write(dir.join("key.pem"), identity.private_key().to_secret_pem())
        };
        save().map_err(|e| {
            anyhow::anyhow!(
                "cannot save the development identity in {}: {e}",
                dir.display()
            )
        })?;
    }
    Ok(identity)
}
