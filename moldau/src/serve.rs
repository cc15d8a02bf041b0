//! `moldau serve`: Kafka's wire protocol over the embedded log.
//!
//! ```text
//!   tokio (multi-thread)                               blocking pool
//!   accept loop ──▶ one task per connection:
//!                   read frame (frame.rs, capped) ──▶ Apis::handle (api.rs, api/*.rs)
//!                   write response            ◀──────  over core_log::Log
//!   SIGTERM/SIGINT ─▶ stop accepting, wake long polls, let connections finish their
//!                     request, close the Log (clean shutdown: no recovery at next open)
//! ```
//!
//! One broker, node 0: the leader of every partition and the coordinator of every group and
//! transaction. Requests on one connection are handled one at a time, in order, as Kafka
//! does; connections run in parallel.

pub mod api;
mod connection;
pub mod error_code;
pub mod frame;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use core_log::Log;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::serve::api::{ApiConfig, Apis, DEFAULT_NUM_PARTITIONS};
use crate::serve::frame::DEFAULT_MAX_REQUEST_BYTES;

/// The server's settings, with Kafka's names and defaults.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// `HOST:PORT` clients are told to connect to; the bound address if `None`.
    pub advertised_listener: Option<(String, u16)>,
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub max_request_bytes: usize,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of a topic created without a count.
    pub num_partitions: u32,
}

impl ServeConfig {
    /// Kafka's defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            listen,
            advertised_listener: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            auto_create_topics: true,
            num_partitions: DEFAULT_NUM_PARTITIONS,
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Binding or accepting on the listen address failed.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Closing the log at shutdown failed: the next open recovers.
    #[error("closing the log failed")]
    Close(#[source] core_log::Error),
}

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    apis: Arc<Apis>,
    config: ServeConfig,
}

impl Server {
    /// Binds `config.listen` to serve `log`.
    pub async fn bind(log: Log, config: ServeConfig) -> Result<Server, ServeError> {
        let listen_error = |source| ServeError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let (advertised_host, advertised_port) = config
            .advertised_listener
            .clone()
            .unwrap_or_else(|| (local_addr.ip().to_string(), local_addr.port()));
        let apis = Arc::new(Apis::new(
            log,
            ApiConfig {
                advertised_host,
                advertised_port,
                auto_create_topics: config.auto_create_topics,
                num_partitions: config.num_partitions,
            },
        ));
        Ok(Server {
            listener,
            local_addr,
            apis,
            config,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets every connection finish
    /// the request it is handling (long polls end at once), and closes the log.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracing::debug!(%peer, "connection accepted");
                        let apis = Arc::clone(&self.apis);
                        let max = self.config.max_request_bytes;
                        connections.spawn(connection::serve(stream, peer, apis, max, stop_rx.clone()));
                    }
                    // Out of file descriptors, a connection reset before accept: the listener
                    // itself is fine.
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!("shutting down");
        drop(self.listener);
        self.apis.shut_down();
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
        let log = self.apis.log().clone();
        drop(self.apis);
        log.close().map_err(ServeError::Close)?;
        tracing::info!("log closed");
        Ok(())
    }
}
