//! The relay's TLS identity: WebTransport's, and the HTTP listener's with
//! `--ws-tls`.
//!
//! Production: a certificate chain and key from PEM files (`--tls-cert`,
//! `--tls-key`), e.g. from cert-manager. Development: a self-signed ECDSA P-256
//! certificate valid for 13 days — browsers accept such a certificate through
//! `serverCertificateHashes` only when it is ECDSA and valid for at most 14
//! days — whose SHA-256 is served at `/cert-hash`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wtransport::Identity;

use crate::config::TlsConfig;

/// Validity of the development certificate (browsers allow at most 14 days).
pub const DEV_CERT_VALIDITY_DAYS: u32 = 13;

pub struct ServerIdentity {
    pub identity: Identity,
    /// SHA-256 of the leaf certificate.
    pub cert_hash: [u8; 32],
    pub self_signed: bool,
    /// The private key as rustls takes it (wtransport does not say which
    /// encoding a loaded key has).
    key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    /// A TLS server configuration with this identity, for the HTTP listener
    /// (`--ws-tls`: `wss://` and the other routes over HTTPS/1.1).
    pub fn http_tls_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain: Vec<CertificateDer<'static>> = self
            .identity
            .certificate_chain()
            .as_slice()
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, self.key.clone_key())
        .map_err(|e| anyhow::anyhow!("the TLS certificate and key do not fit together: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

pub async fn load(config: &TlsConfig) -> anyhow::Result<ServerIdentity> {
    let (identity, key, self_signed) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key_file)) => {
            let identity = Identity::load_pemfiles(cert, key_file).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot load the TLS identity from {} and {}: {e}",
                    cert.display(),
                    key_file.display()
                )
            })?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                anyhow::anyhow!("cannot read the private key in {}: {e}", key_file.display())
            })?;
            (identity, key, false)
        }
        _ => {
            let identity = development_identity(config).await?;
            // wtransport makes and saves development keys as PKCS#8.
            let key = PrivatePkcs8KeyDer::from(identity.private_key().secret_der().to_vec()).into();
            (identity, key, true)
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
        key,
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
