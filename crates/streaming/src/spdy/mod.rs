//! SPDY/3.1, as far as Kubernetes streaming uses it.
pub mod frame;
pub mod session;

pub use frame::Headers;
pub use session::{Session, Stream, StreamWriter};
