//! A connection with its two watchers: the drain (the server is stopping: finish the request
//! in hand, then close) and the idle watch of `--header-read-timeout` ([`super::head_deadline`]).
//!
//! Hand-written rather than hyper-util's `GracefulShutdown` plus a `select!`: those poll the
//! drain's watch channel and the idle timer every time the connection's task wakes, that is
//! several times per request, which counted for some 900 of the query's instructions per
//! GET (docs/benchmarks-notes.md). Here the watchers are polled with a waker of their own and
//! only after it fired; a wake of the connection itself costs a check of one flag and the
//! registration of the task's waker.

use atomic_waker::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum Ended<E> {
    /// hyper finished it: the client closed it, or it closed after the drain.
    Served(Result<(), E>),
    /// The idle watch cut it (no request head for a whole `--header-read-timeout`).
    Idle,
}

pin_project! {
    /// Serves `conn`; starts its graceful shutdown when `drain` completes, and drops it when
    /// `idle` does.
    pub(crate) struct Guarded<C, D, W> {
        #[pin]
        conn: C,
        #[pin]
        drain: D,
        #[pin]
        idle: W,
        draining: bool,
        watchers: Arc<Watchers>,
        watchers_waker: Waker,
    }
}

impl<C, D, W> Guarded<C, D, W> {
    pub(crate) fn new(conn: C, drain: D, idle: W) -> Self {
        let watchers = Arc::new(Watchers {
            // Set, so that the first poll registers both watchers.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            conn,
            drain,
            idle,
            draining: false,
            watchers_waker: Waker::from(watchers.clone()),
            watchers,
        }
    }
}

/// The waker the watchers are polled with: it marks them as woken and wakes the task.
struct Watchers {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Watchers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<C, D, W> Future for Guarded<C, D, W>
where
    C: GracefulConnection,
    D: Future<Output = ()>,
    W: Future<Output = ()>,
{
    type Output = Ended<C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Registered before the flag is read, so that a watcher firing in between is seen
        // at the next poll.
        this.watchers.task.register(cx.waker());
        if this.watchers.woken.load(Ordering::Acquire)
            && this.watchers.woken.swap(false, Ordering::AcqRel)
        {
            let mut watchers_cx = Context::from_waker(this.watchers_waker);
            if !*this.draining && this.drain.poll(&mut watchers_cx).is_ready() {
                *this.draining = true;
                this.conn.as_mut().graceful_shutdown();
            }
            if this.idle.poll(&mut watchers_cx).is_ready() {
                return Poll::Ready(Ended::Idle);
            }
        }
        this.conn.poll(cx).map(Ended::Served)
    }
}
