//! One tracing span per RPC, named after the method, with its duration and
//! gRPC status logged when it completes. Handlers add their own fields (pod
//! and container ids) inside this span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace { inner }
    }
}

#[derive(Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

/// `/runtime.v1.RuntimeService/Version` -> `Version`.
pub fn rpc_name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(path)
}

impl<S, B, RB> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let name = rpc_name(req.uri().path()).to_string();
        let span = tracing::info_span!("rpc", rpc = %name);
        let start = Instant::now();
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let elapsed = start.elapsed();
                let elapsed_us = elapsed.as_micros() as u64;
                let code = match &result {
                    Ok(resp) => tonic::Status::from_header_map(resp.headers())
                        .map(|s| s.code())
                        .unwrap_or(tonic::Code::Ok),
                    Err(_) => tonic::Code::Unavailable,
                };
                crate::metrics::observe_rpc(&name, code, elapsed.as_secs_f64());
                // Errors from handlers arrive as "trailers-only" responses, the
                // status in the headers. Success is reported in the trailers,
                // after the body, so no status in the headers means OK.
                match &result {
                    Ok(resp) => match tonic::Status::from_header_map(resp.headers()) {
                        Some(status) if status.code() != tonic::Code::Ok => tracing::info!(
                            elapsed_us,
                            grpc_code = ?status.code(),
                            grpc_message = status.message(),
                            "rpc failed"
                        ),
                        _ => tracing::debug!(elapsed_us, "rpc ok"),
                    },
                    Err(e) => tracing::warn!(elapsed_us, error = %e, "rpc transport error"),
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rpc_names() {
        for (path, want) in [
            ("/runtime.v1.RuntimeService/Version", "Version"),
            ("/runtime.v1.ImageService/PullImage", "PullImage"),
            ("Version", "Version"),
            ("/", "/"),
        ] {
            assert_eq!(super::rpc_name(path), want);
        }
    }
}
