//! The crius image and artifact store.
//!
//! - `reference`, `registries`, `auth`: pure logic — parsing references,
//!   containers-registries.conf, pull secrets and auth files.
//! - `pull`: one registry endpoint at a time, with retries and verification.
//! - `layout`: blobs in an OCI image layout, written durably.
//! - `oci`: manifests and image configs as oci-spec's types, read leniently
//!   where oci-spec is stricter than crius has always been.
//! - `db`: image records in sled.
//! - `unpack`, `artifact`: confined layer extraction, artifact content.
//! - `usage`: ImageFsInfo's walk, with directory fds.
//! - `store/`: `ImageStore`, what the daemon's ImageService calls (`mod.rs`:
//!   lookups, configs, index.json; `pulls.rs`: pulling; `gc.rs`: removal,
//!   GC, usage).

pub mod artifact;
pub mod auth;
pub mod db;
pub mod layout;
mod oci;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod store;
pub mod unpack;
pub mod usage;

pub use db::{ImageRecord, LayerRecord};
pub use store::{FsUsage, ImageStore, StoreConfig, StoreError};
