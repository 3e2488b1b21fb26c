//! The shutdown signal, passed in as a value (the mini-redis pattern) rather than a global.
//!
//! The binary triggers it on SIGINT/SIGTERM, a test triggers it directly. It must serve three
//! kinds of waiter: tokio tasks (`wait().await`), plain threads that poll a flag or block with a
//! timeout (the thread-pool architecture), and event loops that sleep in `epoll_wait` and need a
//! wake-up (registered callbacks, e.g. writing to an eventfd or a `mio::Waker`). It needs no
//! tokio runtime: `tokio::sync::Notify` is a plain synchronisation primitive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

type Callback = Box<dyn FnOnce() + Send>;

struct Inner {
    triggered: AtomicBool,
    notify: Notify,
    /// Guards the callback list and backs the condvar for blocking waiters.
    callbacks: Mutex<Vec<Callback>>,
    condvar: Condvar,
}

/// A cloneable, one-shot shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                notify: Notify::new(),
                callbacks: Mutex::new(Vec::new()),
                condvar: Condvar::new(),
            }),
        }
    }

    /// Fires the signal: wakes async waiters, blocking waiters, and runs every registered
    /// callback once. Idempotent.
    pub fn trigger(&self) {
        let callbacks = {
            let mut guard = self
                .inner
                .callbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if self.inner.triggered.swap(true, Ordering::SeqCst) {
                return;
            }
            std::mem::take(&mut *guard)
        };
        self.inner.notify.notify_waiters();
        self.inner.condvar.notify_all();
        for cb in callbacks {
            cb();
        }
    }

    /// Whether the signal has fired (cheap: one atomic load).
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Completes once the signal has fired (immediately if it already has). Cancel-safe.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }

    /// Blocks the calling thread until the signal fires or `timeout` passes; returns whether it
    /// fired. For architectures without an async runtime.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self
            .inner
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (_guard, _) = self
            .inner
            .condvar
            .wait_timeout_while(guard, timeout, |_| !self.is_triggered())
            .unwrap_or_else(|e| e.into_inner());
        self.is_triggered()
    }

    /// Registers `f` to run once when the signal fires (on the triggering thread), or runs it
    /// now if it already has. Event loops use this to wake themselves.
    pub fn on_trigger(&self, f: impl FnOnce() + Send + 'static) {
        {
            let mut guard = self
                .inner
                .callbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !self.is_triggered() {
                guard.push(Box::new(f));
                return;
            }
        }
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn callbacks_and_blocking_waiters_fire_once() {
        let s = Shutdown::new();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(10)));
        s.trigger();
        s.trigger();
        assert!(t.join().unwrap());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let h = hits.clone();
        s.on_trigger(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2, "late callbacks run at once");
    }

    #[test]
    fn async_waiters_wake() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = Shutdown::new();
        rt.block_on(async {
            let s2 = s.clone();
            let waiter = tokio::spawn(async move { s2.wait().await });
            tokio::task::yield_now().await;
            s.trigger();
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap();
            s.wait().await; // already fired: immediate
        });
    }
}
