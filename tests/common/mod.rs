//! Shared test harness: HTTP origin, packager fixtures, pipeline helpers.

#![allow(dead_code)]

pub mod fixtures;
pub mod growing;
pub mod hostile;
pub mod origin;
pub mod packagers;
pub mod pipeline;
pub mod trackers;
pub mod viewer;

use std::sync::Once;
use std::time::Duration;

#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use origin::{LiveConfig, Origin, RequestRecord};
#[allow(unused_imports)]
pub use pipeline::*;

/// Initializes GStreamer and registers the `mesh` plugin statically (once).
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst::init");
        gstmesh::plugin_register_static().expect("register mesh plugin");
    });
}

/// Default bound for VOD runs.
pub const VOD_TIMEOUT: Duration = Duration::from_secs(60);

/// A temp directory (removed on drop) plus an origin serving it.
pub struct Env {
    // Field order matters: the origin stops before the directory is removed.
    pub origin: Origin,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        init();
        let dir = tempfile::Builder::new()
            .prefix("gst-mesh-test-")
            .tempdir()
            .expect("tempdir");
        let origin = Origin::start(dir.path());
        Env { origin, dir }
    }
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// Asserts that a pad's output equals an expected media playlist output exactly.
pub fn assert_pad_matches(what: &str, got: &[u8], e: &ExpectedMedia) {
    let exp = e.all();
    let sizes = part_sizes(e, 0);
    assert_bytes_eq(what, got, &exp, Some(&sizes));
}

/// GET requests (status 200/206, path without query) whose path starts with `prefix`.
pub fn ok_paths(log: &[RequestRecord], prefix: &str) -> Vec<String> {
    log.iter()
        .filter(|r| r.method == "GET" && (r.status == 200 || r.status == 206))
        .map(|r| r.path_only().to_string())
        .filter(|p| p.starts_with(prefix))
        .collect()
}
