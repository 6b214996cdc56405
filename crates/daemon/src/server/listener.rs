//! The CRI unix socket: parent directory created, a stale socket from a dead
//! daemon replaced, a live one left alone, mode 0660 and owner root.

use super::ServerError;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

pub const SOCKET_MODE: u32 = 0o660;

pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io = |what: String| move |e: std::io::Error| ServerError::Io { what, source: e };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io(format!(
                "creating socket directory {}",
                parent.display()
            )))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(ServerError::ListenPathNotSocket(path.to_path_buf()));
            }
            // A socket someone still answers on belongs to a live daemon (maybe
            // one with another root): never steal it.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(io(format!("removing stale socket {}", path.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("inspecting {}", path.display()))(e)),
    }

    // Bind under a restrictive umask so the socket is never, even briefly,
    // connectable by other users; then set the exact mode and owner.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io(format!("chmod {}", path.display())))?;
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(path, Some(0.into()), Some(0.into()))
            .map_err(|e| io(format!("chown {}", path.display()))(e.into()))?;
    }
    Ok(listener)
}
