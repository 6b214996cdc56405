//! RPCs that crius does not serve yet answer `UNIMPLEMENTED` with a message
//! naming the RPC, never a panic and never a silent empty answer.
//!
//! `cri_service!` writes a tonic service impl from the RPCs that are built
//! (given as ordinary items) plus a list of those that are not.

use std::pin::Pin;
use tokio_stream::Stream;
use tonic::Status;

/// The stream type of a server-streaming RPC that is not built yet.
pub type NotBuiltStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub fn not_built(service: &str, rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{service}/{rpc} is not implemented by crius {} yet",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Expands to `#[tonic::async_trait] impl $trait for $ty { ... }` so that the
/// generated `async fn`s are seen by `async_trait` after expansion.
macro_rules! cri_service {
    (
        impl $trait:path as $service:literal for $ty:ty {
            $($built:item)*
        }
        not_built {
            $( $name:ident => $method:ident($req:ty) -> $resp:ty; )*
        }
        not_built_streams {
            $( $sname:ident => $smethod:ident($sreq:ty) -> $stype:ident<$sresp:ty>; )*
        }
    ) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $($built)*
            $(
                async fn $method(
                    &self,
                    _request: tonic::Request<$req>,
                ) -> Result<tonic::Response<$resp>, tonic::Status> {
                    Err($crate::server::unimplemented::not_built($service, stringify!($name)))
                }
            )*
            $(
                type $stype = $crate::server::unimplemented::NotBuiltStream<$sresp>;
                async fn $smethod(
                    &self,
                    _request: tonic::Request<$sreq>,
                ) -> Result<tonic::Response<Self::$stype>, tonic::Status> {
                    Err($crate::server::unimplemented::not_built($service, stringify!($sname)))
                }
            )*
        }
    };
}
pub(crate) use cri_service;
