//! The REST API's accept loop: a cap on concurrent connections, a deadline for each
//! request head (which also closes idle keep-alive connections), and an accept that
//! survives a full descriptor table.
//!
//! `axum::serve` has neither a connection cap nor a header timeout, so 1,100 idle
//! connections could fill the daemon's descriptor table and starve reloads, probes and
//! workers. Here a connection needs a permit before it is accepted; beyond the cap,
//! clients wait in the kernel's listen queue, costing the daemon no descriptor.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::deadline::WriteDeadline;

/// How many connections, and how long a client may take to send a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline for a complete request head, from accept or from the previous response;
    /// also how long a write may wait for a client that does not read.
    pub header_timeout: Duration,
}

/// Descriptors kept free for the bus, reloads, probes and workers; the connection cap
/// is lowered to leave them.
pub const DESCRIPTOR_RESERVE: u64 = 128;

impl ConnectionLimits {
    /// The configured cap, lowered where the descriptor limit would not leave the
    /// reserve free.
    pub fn within_descriptor_budget(mut self) -> Self {
        let soft = crate::limits::open_files_soft_limit();
        let budget =
            usize::try_from(soft.saturating_sub(DESCRIPTOR_RESERVE).max(16)).unwrap_or(usize::MAX);
        if self.max_connections > budget {
            tracing::warn!(
                configured = self.max_connections,
                allowed = budget,
                open_files_limit = soft,
                "server.max_connections lowered to keep descriptors for the daemon"
            );
            self.max_connections = budget;
        }
        self
    }
}

/// What the kernel may hold unsent for one client: a fixed send buffer instead of the
/// auto-tuned one (up to `tcp_wmem`'s 4 MiB), so that a client that stops reading stalls
/// the writes soon, and the write deadline then closes its connection.
const SEND_BUFFER: libc::c_int = 256 * 1024;

fn bound_send_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket this function's caller owns, with a properly
    // sized int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SEND_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `app` on `listener` until `stop` turns true, then lets requests in flight
/// finish (up to a few seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE/ENFILE and the like: back off instead of spinning; the
                    // client stays in the listen queue.
                    tracing::warn!(error = %e, "REST API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let service = app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        bound_send_buffer(&stream);
        let stream = WriteDeadline::new(stream, limits.header_timeout);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
