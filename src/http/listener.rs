//! Serving one listener: HTTP/1 connections with a header-read timeout and a cap on how many are
//! open at once, drained gracefully on shutdown.
//!
//! `axum::serve` has neither limit, so a client that sends its request head a byte at a time
//! (slowloris), or opens connections and sends nothing, would hold them forever. This is the
//! accept loop of `axum::serve` with hyper's HTTP/1 builder configured.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{ListenerLimits, MAX_REQUEST_HEAD_BYTES};
use crate::metrics::Metrics;

/// Serves `service` on `listener` until `stop` turns true, then stops accepting, lets open
/// connections finish their requests (idle ones close at once) and returns when all are
/// closed.
///
/// At most `limits.max_connections` connections are open at once: a connection beyond them is
/// closed as soon as it is accepted, so the client learns at once (and may retry elsewhere or
/// later) instead of waiting in the kernel's backlog behind whoever holds the listener.
pub async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    limits: ListenerLimits,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let stopping = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::pin!(stopping);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(name, error).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.refuse("connections");
            tracing::debug!(
                listener = name,
                max_connections = limits.max_connections,
                "connection refused: MAX_CONNECTIONS reached"
            );
            drop(stream);
            continue;
        };
        let connection = graceful.watch(builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        ));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header-read timeouts, malformed requests and clients that went away.
                tracing::debug!(listener = name, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accepting can fail for one connection (it was reset before we took it) or for the listener
/// (out of file descriptors): the latter is retried after a pause, as `axum::serve` does.
async fn accept_failed(name: &'static str, error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(listener = name, %error, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
