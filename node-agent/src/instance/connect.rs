//! The `flame.v1.Instance` client over a Unix socket.
//!
//! What: [`connect`] opens a plaintext HTTP/2 gRPC channel to an instance's socket.
//!
//! Why a custom connector: tonic's `Endpoint` speaks TCP; a `tower::service_fn` that opens a
//! `tokio::net::UnixStream` (wrapped in hyper-util's `TokioIo`) makes it speak to a path. The
//! URI is a placeholder that tonic requires and the connector ignores.
//!
//! Caveat: the channel reconnects on demand like any tonic channel; after the instance dies
//! every call fails fast with a transport error, which the caller treats as the end of the
//! binding.

use flame_proto::v1::instance_client::InstanceClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Largest message sent to or accepted from an instance. Payload limits are the control
/// plane's; this only lifts tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Connects an `Instance` client to the Unix socket at `socket`.
pub async fn connect(socket: &Path) -> Result<InstanceClient<Channel>, tonic::transport::Error> {
    let path: PathBuf = socket.to_owned();
    let channel = Endpoint::from_static("http://instance.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(InstanceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
