//! The exit watcher: a container's monitor renames its exit file into
//! `<runroot>/exits/<id>` when the container exits; one thread blocks in
//! inotify on that directory and has the async side observe the exit
//! (`Manager::refresh`): the record is persisted and a stopped event
//! published while no RPC is running, as kubelet's Evented PLEG needs.
//!
//! Every path that looks at a container still observes the exit itself
//! (`refresh`), so a missed event (an inotify queue overflow, the
//! watcher failing) delays an event, never loses an exit; on an overflow
//! every running container is looked at.

use super::Manager;
use crate::state::ContainerPhase;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::sync::{Arc, Weak};

/// What the thread hands the async side.
enum Seen {
    File(String),
    /// The kernel dropped events: look at every running container.
    Overflow,
}

impl Manager {
    /// Starts the watcher (a thread and a task); both end with the manager.
    /// Call within the tokio runtime.
    pub fn watch_exits(self: &Arc<Self>) {
        let dir = self.cfg.runroot.join("exits");
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC).and_then(|i| {
            i.add_watch(
                &dir,
                AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
            )
            .map(|_| i)
        }) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e,
                    "inotify: exits are observed only when an RPC looks (no events for them)");
                return;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Seen>();
        let spawned = std::thread::Builder::new()
            .name("crius-exits".into())
            .spawn(move || loop {
                let events = match inotify.read_events() {
                    Ok(ev) => ev,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the exit directory's inotify events");
                        return;
                    }
                };
                for e in events {
                    let seen = if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        Seen::Overflow
                    } else {
                        match e.name.and_then(|n| n.into_string().ok()) {
                            Some(n) => Seen::File(n),
                            None => continue,
                        }
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "starting the exit watcher");
            return;
        }
        let weak: Weak<Manager> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(seen) = rx.recv().await {
                let Some(m) = weak.upgrade() else { return };
                match seen {
                    Seen::File(name) => {
                        // Exact ids only: temp files and exec scratch
                        // files name no container.
                        let c = crate::sync::read(&m.containers).get(&name).cloned();
                        if let Some(c) = c {
                            m.refresh(&c).await;
                        }
                    }
                    Seen::Overflow => {
                        tracing::warn!("inotify overflow on the exit directory: looking at every running container");
                        let running: Vec<_> = crate::sync::read(&m.containers)
                            .values()
                            .filter(|c| c.with(|r| r.phase == ContainerPhase::Running))
                            .cloned()
                            .collect();
                        for c in running {
                            m.refresh(&c).await;
                        }
                    }
                }
            }
        });
    }
}
