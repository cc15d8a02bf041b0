//! One client connection: read a frame, handle it, write the response, in a loop. Requests
//! are handled one at a time, so responses go out in request order (Kafka's guarantee, which
//! clients rely on to match responses to requests).
//!
//! Anything wrong with the bytes (a bad size, a header that does not decode, an unknown API
//! or version, a body that does not decode) closes this connection only: the server and its
//! other connections go on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::api::{Apis, Reply};
use super::frame::read_frame;

/// Serves `stream` until the peer closes it, it sends something malformed, or `stop` turns
/// true.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    apis: Arc<Apis>,
    max_request_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max_request_bytes) => frame,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let handler = Arc::clone(&apis);
        let reply = match tokio::task::spawn_blocking(move || handler.handle(frame)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, cause = ?std::error::Error::source(&e), "closing connection");
                break;
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "request handler failed; closing connection");
                break;
            }
        };
        if let Reply::Send(bytes) = reply
            && let Err(e) = writer.write_all(&bytes).await
        {
            tracing::debug!(%peer, error = %e, "write failed; closing connection");
            break;
        }
    }
    tracing::debug!(%peer, "connection closed");
}
