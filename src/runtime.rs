//! The one tokio runtime shared by every meshsrc instance in the process.

use std::sync::LazyLock;

/// Worker threads: `GST_MESH_RUNTIME_THREADS`, default 2 (set-top boxes have few cores).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    let threads = std::env::var("GST_MESH_RUNTIME_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(threads)
        .thread_name("gst-mesh-runtime")
        .build()
        .expect("cannot start the gst-mesh tokio runtime")
});
