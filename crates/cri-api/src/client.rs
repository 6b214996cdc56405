//! A CRI client over a unix socket, as kubelet and crictl connect.

use crate::v1::image_service_client::ImageServiceClient;
use crate::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects a gRPC channel to `path`, which may be a plain path or a
/// `unix://` URL (the form kubelet's `--container-runtime-endpoint` uses).
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = match path
        .as_ref()
        .to_str()
        .and_then(|s| s.strip_prefix("unix://"))
    {
        Some(p) => PathBuf::from(p),
        None => path.as_ref().to_path_buf(),
    };
    // The URI is required by tonic but unused: the connector ignores it.
    Endpoint::from_static("http://crius.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// Both CRI services on one channel.
#[derive(Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to a CRI endpoint on a unix socket.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, tonic::transport::Error> {
        let channel = connect_unix(path).await?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
        })
    }
}

/// kubelet allows CRI responses up to 16 MiB (ListContainers on a busy node).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
