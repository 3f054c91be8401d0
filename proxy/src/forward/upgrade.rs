//! HTTP/1.1 upgrades (WebSocket and the like): once both sides have
//! switched protocols, the bytes are copied both ways until either closes.

use http::uri::Authority;
use hyper_util::rt::TokioIo;

/// Joins the client's and the upstream's upgraded connections.
pub(super) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    authority: Authority,
) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(upstream = %authority, error = %e, "upgraded connection closed");
            }
        }
        Err(e) => tracing::warn!(upstream = %authority, error = %e, "upgrade failed"),
    }
}
