//! Watching the config directory: a CNI daemonset writes its conflist
//! after crius started (or removes it), and the network follows without a
//! restart. One thread per daemon blocks in inotify; a burst of events
//! (a file written in pieces, renamed into place) becomes one reload.

use crate::Cni;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Events that change what a directory offers.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

/// Starts the watcher thread; it ends when the `Cni` is dropped (at its
/// next event).
pub fn start(cni: &Arc<Cni>) -> std::io::Result<()> {
    let weak = Arc::downgrade(cni);
    let dir = cni.options().config_dir.clone();
    std::thread::Builder::new()
        .name("crius-cni-watch".into())
        .spawn(move || run(weak, dir))?;
    Ok(())
}

fn run(weak: Weak<Cni>, dir: std::path::PathBuf) {
    loop {
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "inotify: the CNI config directory is not watched");
                return;
            }
        };
        // The directory may not exist (yet, or any more): look again each
        // second, reloading so its absence is reported.
        while inotify.add_watch(&dir, mask()).is_err() {
            let Some(cni) = weak.upgrade() else { return };
            cni.reload();
            drop(cni);
            std::thread::sleep(Duration::from_secs(1));
        }
        match weak.upgrade() {
            Some(cni) => cni.reload(),
            None => return,
        };
        loop {
            let events = match inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events");
                    break;
                }
            };
            let gone = events.iter().any(|e| {
                e.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                )
            });
            // The rest of a burst: a writer's several steps, one reload.
            std::thread::sleep(Duration::from_millis(20));
            let Some(cni) = weak.upgrade() else { return };
            cni.reload();
            if gone {
                break;
            }
        }
    }
}
