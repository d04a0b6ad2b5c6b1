//! WebTorrent trackers run as child processes on 127.0.0.1 for tests: our own `mesh-tracker`,
//! bittorrent-tracker (node) and aquatic_ws. The last two come from `scripts/setup-deps.sh`,
//! which installs them into `.tools/`.
//!
//! A [`TrackerProcess`] is killed and reaped when dropped (or on [`TrackerProcess::stop`]).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a tracker may take to accept connections.
pub const TRACKER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of a tracker's stderr kept for failure messages.
const STDERR_LINES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerKind {
    /// `mesh-tracker`, this crate's binary.
    Bundled,
    /// bittorrent-tracker 11 under node (`scripts/bittorrent-tracker.mjs`).
    BittorrentTracker,
    /// aquatic_ws from `.tools/bin`.
    AquaticWs,
}

/// A tracker child process listening on 127.0.0.1.
pub struct TrackerProcess {
    pub kind: TrackerKind,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Removed on drop (aquatic_ws's config file).
    _dir: Option<tempfile::TempDir>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn setup_hint(what: &Path) -> String {
    format!(
        "{} is missing: run scripts/setup-deps.sh to install the test trackers",
        what.display()
    )
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Keeps the last [`STDERR_LINES`] lines of a stream, until it ends.
fn drain_lines(stream: impl Read + Send + 'static, keep: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut lines = keep.lock().unwrap();
            if lines.len() == STDERR_LINES {
                lines.remove(0);
            }
            lines.push(line);
        }
    });
}

/// Sends each stdout line on the channel (then drains the rest), so the child never blocks
/// on a full pipe.
fn stdout_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// The `mesh-tracker` binary of the workspace's `mesh-tracker` crate, which `cargo build
/// --release` at the root builds (it is a default member). Panics with the command that builds
/// it when it is missing.
pub fn mesh_tracker_binary() -> PathBuf {
    let binary = manifest_dir().join("target/release/mesh-tracker");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p mesh-tracker`",
        binary.display()
    );
    binary
}

impl TrackerProcess {
    /// Starts a tracker on 127.0.0.1 with a free port and waits (at most
    /// [`TRACKER_START_TIMEOUT`]) until it accepts TCP connections. Panics if it cannot.
    pub fn start(kind: TrackerKind) -> TrackerProcess {
        let root = manifest_dir();
        let mut dir = None;
        let (mut command, port) = match kind {
            TrackerKind::Bundled => {
                let mut c = Command::new(mesh_tracker_binary());
                c.args(["--listen", "127.0.0.1:0"]);
                (c, None)
            }
            TrackerKind::BittorrentTracker => {
                let module = root.join(".tools/npm/node_modules/bittorrent-tracker/package.json");
                assert!(module.exists(), "{}", setup_hint(&module));
                let mut c = Command::new("node");
                c.arg(root.join("scripts/bittorrent-tracker.mjs")).arg("0");
                (c, None)
            }
            TrackerKind::AquaticWs => {
                let binary = root.join(".tools/bin/aquatic_ws");
                assert!(binary.exists(), "{}", setup_hint(&binary));
                let port = free_port();
                let temp = tempfile::Builder::new()
                    .prefix("gst-mesh-aquatic-")
                    .tempdir()
                    .expect("tempdir");
                let config = temp.path().join("aquatic_ws.toml");
                std::fs::write(&config, aquatic_config(&binary, port)).expect("write config");
                let mut c = Command::new(&binary);
                c.arg("-c").arg(&config);
                dir = Some(temp);
                (c, Some(port))
            }
        };
        command
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {kind:?} tracker ({command:?}): {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain_lines(child.stderr.take().expect("stderr"), stderr.clone());
        let lines = stdout_lines(child.stdout.take().expect("stdout"));
        let mut process = TrackerProcess {
            kind,
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: Some(child),
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + TRACKER_START_TIMEOUT;
        let port = match port {
            Some(port) => port,
            None => process.announced_port(&lines, deadline),
        };
        process.addr = SocketAddr::from(([127, 0, 0, 1], port));
        process.url = format!("ws://127.0.0.1:{port}");
        process.wait_accepting(deadline);
        process
    }

    /// The port in the `… listening on ws://127.0.0.1:PORT` line.
    fn announced_port(&mut self, lines: &mpsc::Receiver<String>, deadline: Instant) -> u16 {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, rest)) = line.split_once(" listening on ws://127.0.0.1:")
                        && let Ok(port) = rest.trim().parse()
                    {
                        return port;
                    }
                }
                Err(e) => self.fail(&format!("no listening line on stdout ({e})")),
            }
        }
    }

    fn wait_accepting(&mut self, deadline: Instant) {
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.fail(&format!("exited with {status}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("not accepting on {} in time", self.addr));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        self.stop();
        // Give the stderr reader a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "{:?} tracker: {what}; its stderr:\n{}",
            self.kind,
            self.stderr_tail()
        );
    }

    /// The last lines the tracker wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the tracker and reaps it (the "tracker down" scenario). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// aquatic_ws's default config (`aquatic_ws -p`) set to listen on 127.0.0.1:`port`.
fn aquatic_config(binary: &Path, port: u16) -> String {
    let output = Command::new(binary)
        .arg("-p")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} -p: {e}", binary.display()));
    assert!(output.status.success(), "{} -p failed", binary.display());
    let default = String::from_utf8(output.stdout).expect("UTF-8 config");
    let mut section = String::new();
    let mut replaced = false;
    let config: Vec<String> = default
        .lines()
        .map(|line| {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                section = trimmed.to_string();
            }
            if section == "[network]" && trimmed.starts_with("address ") {
                replaced = true;
                format!("address = \"127.0.0.1:{port}\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(
        replaced,
        "no `address` in the [network] section of aquatic_ws -p:\n{default}"
    );
    config.join("\n") + "\n"
}
