//! Pod networking through CNI (issue 16), built in slices.
//!
//! - `config`: network configuration as libcni and CRI-O read it — the
//!   `.conflist`, `.conf` and `.json` files of a config directory, the one
//!   network used (the named default, or the first valid file in lexical
//!   order), invalid files skipped with the reason, and which of a list's
//!   plugin binaries are missing from the plugin directories. Pure but for
//!   `config::load_dir`, which reads the directory.
//!
//! Still to come here: invoking plugins (ADD, DEL, CHECK, STATUS, GC) in a
//! pod's network namespace, the on-disk result cache, and watching the
//! config directory.

pub mod config;
