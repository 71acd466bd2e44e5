//! A GET over TLS to a development relay serving `--ws-tls`, pinned to its
//! self-signed certificate (read from the relay's identity directory). The
//! lab's reqwest has no TLS; this is all its readiness check needs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// SHA-256 of the certificate in `cert.pem` (DER), as candidates carry it.
pub fn cert_hash(cert_pem: &Path) -> anyhow::Result<[u8; 32]> {
    let der = CertificateDer::from_pem_file(cert_pem)
        .with_context(|| format!("cannot read the relay certificate {}", cert_pem.display()))?;
    Ok(Sha256::digest(der.as_ref()).into())
}

/// How long one request may take (a relay that accepts and then stalls must
/// not hold up its readiness check).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET path` on `127.0.0.1:port` over TLS pinned to `cert_hash`: the status
/// code and body.
pub async fn get(port: u16, path: &str, cert_hash: [u8; 32]) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(TIMEOUT, get_unbounded(port, path, cert_hash))
        .await
        .with_context(|| format!("GET {path} over TLS took over {TIMEOUT:?}"))?
}

async fn get_unbounded(
    port: u16,
    path: &str,
    cert_hash: [u8; 32],
) -> anyhow::Result<(u16, String)> {
    let config = rallypoint_client_native::tls::client_config(Some(cert_hash))
        .map_err(anyhow::Error::msg)?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&config))
        .connect(name, tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:.80}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}
