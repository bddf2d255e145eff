//! Reusable threads for the agent's short-lived jobs: a connection's request loop, a
//! process's output pumps and stdin feeder. Under an emulating KVM, starting a thread is
//! ~0.1-0.3 s of emulated guest-kernel work (its stack and signal-stack mappings, their page
//! faults, the clone) and ending one unmaps all of it again. A job therefore goes to an idle
//! worker when there is one; a worker whose job has ended waits for the next (up to
//! [`MAX_IDLE`] of them wait, the rest end). [`prestart`] runs before the agent reports
//! ready, so a warm-start template's guest already has them and every restored guest's first
//! process finds its threads waiting.
//!
//! Workers inherit the signal mask of the thread that started them (SIGCHLD blocked, see
//! `reaper`), like the threads they replace. A job that panics ends the agent through its
//! panic hook, as before.

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, PoisonError};

/// Idle workers kept waiting; more end when their job does.
const MAX_IDLE: usize = 8;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The job queues of the idle workers.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

/// Starts `n` idle workers.
pub fn prestart(n: usize) -> io::Result<()> {
    for _ in 0..n {
        let worker = start()?;
        idle().push(worker);
    }
    Ok(())
}

/// Runs `job` on an idle worker, or on a new one if none is idle.
pub fn run(job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let mut job: Job = Box::new(job);
    loop {
        let Some(worker) = idle().pop() else { break };
        // A worker that has gone hands the job back (it cannot have: workers only end
        // instead of returning to the idle list).
        match worker.send(job) {
            Ok(()) => return Ok(()),
            Err(returned) => job = returned.0,
        }
    }
    start()?
        .send(job)
        .map_err(|_| io::Error::other("a new worker thread ended at once"))
}

fn idle() -> std::sync::MutexGuard<'static, Vec<Sender<Job>>> {
    IDLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new worker, waiting for its first job.
fn start() -> io::Result<Sender<Job>> {
    let (queue, jobs) = channel::<Job>();
    let me = queue.clone();
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || work(&jobs, &me))?;
    Ok(queue)
}

fn work(jobs: &Receiver<Job>, me: &Sender<Job>) {
    while let Ok(job) = jobs.recv() {
        job();
        let mut idle = idle();
        if idle.len() >= MAX_IDLE {
            return;
        }
        idle.push(me.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn jobs_run_and_workers_are_reused() {
        prestart(1).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..10 {
            let (done, tx) = (Arc::clone(&done), tx.clone());
            run(move || {
                done.fetch_add(1, Ordering::SeqCst);
                tx.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
            ids.insert(rx.recv().unwrap());
            // Let the worker go back to the idle list before the next job.
            while idle().is_empty() {
                std::thread::yield_now();
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert!(ids.len() < 10, "every job got a thread of its own");
        assert!(idle().len() <= MAX_IDLE);
    }
}
