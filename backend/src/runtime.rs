//! The backend's tokio runtime: its own threads, named (`threads`) and pinned to the configured cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::BackendConfig;
use crate::threads;

pub fn build_runtime(cfg: &BackendConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let names = Arc::new(AtomicUsize::new(0));
    let workers = cfg.worker_threads;
    let cores: Vec<core_affinity::CoreId> = cfg
        .cores
        .iter()
        .map(|&id| core_affinity::CoreId { id })
        .collect();
    let pin_next = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .max_blocking_threads(cfg.blocking_threads_max)
        // tokio starts its workers first, when the runtime is built; every later thread is the
        // blocking pool's (or a worker's stand-in during `block_in_place`).
        .thread_name_fn(move || {
            let n = names.fetch_add(1, Ordering::Relaxed);
            if n < workers {
                threads::numbered(threads::BACKEND, n)
            } else {
                threads::BLOCKING.to_owned()
            }
        })
        .on_thread_start(move || {
            if !cores.is_empty() {
                let core = cores[pin_next.fetch_add(1, Ordering::Relaxed) % cores.len()];
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(core = core.id, "could not pin a backend thread");
                }
            }
        })
        .enable_all()
        .build()
}
