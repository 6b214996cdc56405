//! A pool of things made ahead of the RPCs that need them (started
//! monitors, fresh namespace sets): filled by one background filler at a
//! time, taken on the RPC path without ever waiting for the filler.
//!
//! Why never wait: the daemon's filler runs at idle priority and std's
//! mutex has no priority inheritance, so a take that blocked on a filler
//! preempted while holding the lock would wait for an idle CPU. A busy
//! pool counts as empty; the caller makes one itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

#[derive(Debug)]
pub struct Pool<T> {
    size: usize,
    ready: Mutex<Vec<T>>,
    filling: AtomicBool,
    /// Drained: nothing more is made.
    closed: AtomicBool,
    /// Takes that found a ready thing, and that did not (the metrics).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<T> Pool<T> {
    /// An empty pool that fills up to `size`.
    pub fn new(size: usize) -> Pool<T> {
        Pool {
            size,
            ready: Mutex::new(Vec::new()),
            filling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn ready(&self) -> MutexGuard<'_, Vec<T>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Things ready to be taken.
    pub fn available(&self) -> usize {
        self.ready().len()
    }

    /// Whether the pool holds fewer than it should (never once drained).
    pub fn needs_fill(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.available() < self.size
    }

    /// `f` over the ready things (tests, diagnostics).
    pub fn inspect<R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        f(&self.ready())
    }

    /// Makes things with `make` until the pool is full, calling
    /// `before_each` before each (the daemon waits there for a quiet
    /// moment). One filler at a time: a second call returns at once. A
    /// drain during the fill stops it, and what was being made is dropped.
    pub fn fill_with<E>(
        &self,
        before_each: impl Fn(),
        mut make: impl FnMut() -> Result<T, E>,
    ) -> Result<(), E> {
        loop {
            if self.filling.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let result = (|| {
                while self.needs_fill() {
                    before_each();
                    let made = make()?;
                    let mut ready = self.ready();
                    if self.closed.load(Ordering::Acquire) {
                        // Drained meanwhile: this one goes at once.
                        break;
                    }
                    ready.push(made);
                }
                Ok(())
            })();
            self.filling.store(false, Ordering::Release);
            // A take between the last check and the store found a filler
            // still running and left: look once more.
            if result.is_err() || !self.needs_fill() {
                return result;
            }
        }
    }

    /// A ready thing, or None when the pool is empty or its lock is held
    /// (by the filler): never waits.
    pub fn try_take(&self) -> Option<T> {
        let got = match self.ready.try_lock() {
            Ok(mut ready) => ready.pop(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().pop(),
            Err(TryLockError::WouldBlock) => None,
        };
        let counter = if got.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        got
    }

    /// Takes so far that found a ready thing, and that did not.
    pub fn hits_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Drops every ready thing and makes no more (daemon shutdown); a fill
    /// in progress stops and keeps nothing.
    pub fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        drop(std::mem::take(&mut *self.ready()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn fills_to_size_takes_and_refills() {
        let pool = Pool::new(3);
        let made = AtomicUsize::new(0);
        let make = || Ok::<_, ()>(made.fetch_add(1, Ordering::Relaxed));
        assert!(pool.needs_fill());
        pool.fill_with(|| {}, make).unwrap();
        assert_eq!((pool.available(), pool.needs_fill()), (3, false));
        assert_eq!(pool.inspect(|r| r.to_vec()), vec![0, 1, 2]);
        assert_eq!(pool.try_take(), Some(2));
        assert!(pool.needs_fill());
        pool.fill_with(|| {}, make).unwrap();
        assert_eq!(pool.inspect(|r| r.to_vec()), vec![0, 1, 3]);
        assert_eq!(pool.hits_misses(), (1, 0));
        pool.drain();
        assert_eq!(pool.try_take(), None);
        assert_eq!(pool.hits_misses(), (1, 1));
    }

    #[test]
    fn errors_stop_the_fill_and_keep_what_was_made() {
        let pool = Pool::new(3);
        let mut n = 0;
        let r = pool.fill_with(
            || {},
            || {
                n += 1;
                if n == 2 {
                    Err("no more")
                } else {
                    Ok(n)
                }
            },
        );
        assert_eq!(r, Err("no more"));
        assert_eq!(pool.inspect(|r| r.to_vec()), vec![1]);
        // The next fill is not locked out by the failed one.
        pool.fill_with(|| {}, || Ok::<_, ()>(9)).unwrap();
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn one_filler_at_a_time_and_takes_never_wait() {
        let pool = Arc::new(Pool::new(2));
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let filler = std::thread::spawn(move || {
            let mut first = true;
            p.fill_with(
                || {},
                || {
                    if first {
                        first = false;
                        entered_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                    }
                    Ok::<_, ()>(1)
                },
            )
        });
        entered.recv().unwrap();
        // A second filler returns at once, having made nothing.
        pool.fill_with(
            || {},
            || -> Result<i32, ()> { panic!("second filler made something") },
        )
        .unwrap();
        // With the lock held (as the filler holds it while pushing), a
        // take answers None at once.
        {
            let _held = pool.ready();
            assert_eq!(pool.try_take(), None);
        }
        go.send(()).unwrap();
        filler.join().unwrap().unwrap();
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn a_drain_empties_the_pool_and_stops_a_fill_in_progress() {
        let pool = Arc::new(Pool::new(5));
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let p = pool.clone();
        let d = dropped.clone();
        let mut n = 0;
        p.fill_with(
            || {},
            || {
                n += 1;
                if n == 3 {
                    // Drained while the third is being made.
                    pool.drain();
                }
                Ok::<_, ()>(Counted(d.clone()))
            },
        )
        .unwrap();
        // Two were ready and dropped by the drain, the third at once.
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(pool.available(), 0);
        assert!(!pool.needs_fill());
        pool.fill_with(|| {}, || Ok::<_, ()>(Counted(d.clone())))
            .unwrap();
        assert_eq!(pool.available(), 0, "a drained pool stays empty");
    }
}
