//! The OCI runtime layer's error: its own words when the runtime refuses,
//! or the I/O that failed around it.

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("runtime handler {0}: binary not found")]
    NoBinary(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused: its own words.
    #[error("{runtime} {op} {id}: {message}")]
    Runtime {
        runtime: String,
        op: &'static str,
        id: String,
        message: String,
    },
}
