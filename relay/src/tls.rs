//! The WebTransport server identity.
//!
//! Production: a certificate chain and key from PEM files (`--tls-cert`,
//! `--tls-key`), e.g. from cert-manager. Development: a self-signed ECDSA P-256
//! certificate valid for 13 days — browsers accept such a certificate through
//! `serverCertificateHashes` only when it is ECDSA and valid for at most 14
//! days — whose SHA-256 is served at `/cert-hash`.

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
        _ => {
            let identity = Identity::self_signed_builder()
                .subject_alt_names(&config.dev_cert_names)
                .from_now_utc()
                .validity_days(DEV_CERT_VALIDITY_DAYS)
                .build()
                .map_err(|e| anyhow::anyhow!("--dev-cert-names has an invalid name: {e}"))?;
            (identity, true)
        }
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
