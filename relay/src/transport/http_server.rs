//! The relay's HTTP/1.1 server (plain or TLS), with the deadlines and the cap
//! that `axum::serve` does not offer:
//!
//! * a hard cap at accept: every socket takes a [`ConnectionSlot`] of the
//!   relay's budget before anything is read from it, or is closed at once;
//!   the slot lives inside the socket's I/O type, so it follows a WebSocket
//!   through its upgrade and is returned when the socket closes;
//! * a TLS handshake deadline, then a request-header deadline (hyper's
//!   `header_read_timeout`, which also runs before the first byte), so a
//!   socket that sends nothing, or half a request, is closed.
//!
//! Handshakes run on their own tasks: one slow client never holds up the next.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::budget::{ConnectionBudget, ConnectionSlot};

/// Deadlines of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From accept to a completed TLS handshake (TLS listeners only).
    pub tls_handshake: Duration,
    /// From accept (or the previous response) to a request's complete header.
    pub request_header: Duration,
}

/// Serves `router` on `tcp` until `stop` turns true. Connections already open
/// keep being served (their sessions drain on their own).
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    budget: ConnectionBudget,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("cannot accept a TCP connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = budget.try_admit() else {
            tracing::debug!(%peer, limit = budget.limit(), "at the connection limit; closing a new connection");
            continue;
        };
        // Probe answers and audio are small frames: no Nagle delay.
        let _ = stream.set_nodelay(true);
        // What the kernel holds unsent for a WebSocket is held in time by
        // nothing: keep it small, so media waits in the connection's queue,
        // where the writer drops what is too old (`ws::stale_media`).
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(super::ws::UNSENT_LOW_WATER);
        let io = Budgeted {
            inner: stream,
            _slot: slot,
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(io, peer, router, deadlines).await,
                Some(acceptor) => {
                    match tokio::time::timeout(deadlines.tls_handshake, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => serve_connection(tls, peer, router, deadlines).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, router: Router, deadlines: Deadlines)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router.layer(axum::Extension(ConnectInfo(peer))));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.request_header)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// A socket together with its slot of the connection budget.
struct Budgeted {
    inner: TcpStream,
    _slot: ConnectionSlot,
}

impl AsyncRead for Budgeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
