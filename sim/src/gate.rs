//! A simulated process: every task a node starts runs behind its gate, so the simulator
//! can pause the whole node (its tasks are not polled, as under SIGSTOP, while time goes
//! on) and crash it (every task is dropped at once, as the process dies).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use dynakv_node::local::Spawn;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    paused: bool,
    /// Tasks that found the gate paused and wait to be woken on resume.
    waiting: Vec<Waker>,
    /// Every task started since the last crash, to abort on the next one.
    tasks: Vec<AbortHandle>,
    /// Finished tasks are dropped from `tasks` when it reaches this length.
    prune_at: usize,
}

#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
}

impl Gate {
    pub fn pause(&self) {
        self.state.lock().paused = true;
    }

    pub fn resume(&self) {
        let waiting = {
            let mut s = self.state.lock();
            s.paused = false;
            std::mem::take(&mut s.waiting)
        };
        for w in waiting {
            w.wake();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.state.lock().paused
    }

    /// Drops every task of the node, as a crash of its process would.
    pub fn crash(&self) {
        let (tasks, waiting) = {
            let mut s = self.state.lock();
            s.paused = false;
            (std::mem::take(&mut s.tasks), std::mem::take(&mut s.waiting))
        };
        for t in tasks {
            t.abort();
        }
        drop(waiting);
    }

    /// Starts `task` behind this gate.
    pub fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(Gated {
            gate: self.clone(),
            inner: Box::pin(task),
        });
        let mut s = self.state.lock();
        if s.tasks.len() >= s.prune_at {
            s.tasks.retain(|t| !t.is_finished());
            s.prune_at = (s.tasks.len() * 2).max(64);
        }
        s.tasks.push(handle.abort_handle());
    }
}

struct Gated {
    gate: Arc<Gate>,
    inner: BoxFuture<'static, ()>,
}

impl Future for Gated {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut s = self.gate.state.lock();
            if s.paused {
                s.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}

/// The node's [`Spawn`]: its tasks go behind its gate.
pub struct GatedSpawn(pub Arc<Gate>);

impl Spawn for GatedSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.0.spawn(task);
    }
}
