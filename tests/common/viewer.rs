//! meshsrc viewers as `gst-launch-1.0 -m -e meshsrc … ! queue ! filesink sync=true`
//! processes, for the mesh tests: their output, `mesh-statistics`, warnings, and the peak RSS
//! and CPU time of the process.

use super::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The live playlist the mesh tests serve.
pub const LIVE: &str = "live.m3u8";

/// A directory holding only libgstmesh.so, for GST_PLUGIN_PATH of child processes.
pub fn plugin_dir(env: &Env) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        deps.join("libgstmesh.so"),
        deps.parent().unwrap().join("libgstmesh.so"),
    ];
    let lib = candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libgstmesh.so not built next to {}", exe.display()));
    let dir = env.path("plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libgstmesh.so");
    if !link.exists() {
        std::os::unix::fs::symlink(lib, &link).unwrap();
    }
    dir
}

pub struct Viewer {
    pub name: String,
    pub child: Child,
    pub out: PathBuf,
    pub messages: PathBuf,
    /// The process's peak RSS and CPU time, sampled every 100 ms while it runs.
    usage: Arc<Usage>,
}

/// What the sampler saw of a process.
#[derive(Debug, Default)]
pub struct Usage {
    /// The largest VmHWM (peak RSS), in kB.
    peak_rss_kb: AtomicU64,
    /// CPU time (user + system), in clock ticks.
    cpu_ticks: AtomicU64,
}

impl Usage {
    /// Reads `/proc/<pid>`; false once the process has exited (or is a zombie).
    fn sample(&self, pid: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            return false;
        }
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            self.peak_rss_kb.fetch_max(kb, Ordering::Relaxed);
        }
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime, fields 14 and 15 of stat: 12 and 13 after the name.
            if let (Some(u), Some(s)) = (fields.get(11), fields.get(12))
                && let (Ok(u), Ok(s)) = (u.parse::<u64>(), s.parse::<u64>())
            {
                self.cpu_ticks.fetch_max(u + s, Ordering::Relaxed);
            }
        }
        true
    }

    /// Samples `pid` every 100 ms until it exits.
    fn watch(pid: u32) -> Arc<Usage> {
        let usage = Arc::new(Usage::default());
        let watched = usage.clone();
        std::thread::spawn(move || {
            while watched.sample(pid) {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        usage
    }
}

impl Viewer {
    pub fn spawn(env: &Env, name: &str, location: &str, properties: &[String]) -> Viewer {
        let out = env.path(&format!("{name}.ts"));
        let messages = env.path(&format!("{name}.log"));
        let log = std::fs::File::create(&messages).unwrap();
        let mut args: Vec<String> = vec![
            "-m".into(),
            "-e".into(),
            "meshsrc".into(),
            "name=m".into(),
            format!("location={location}"),
            "ice-address=127.0.0.1".into(),
        ];
        args.extend(properties.iter().cloned());
        args.extend(
            ["!", "queue", "!", "filesink", "sync=true"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(format!("location={}", out.display()));
        let child = Command::new("gst-launch-1.0")
            .args(&args)
            .env("GST_PLUGIN_PATH", plugin_dir(env))
            .env("GST_REGISTRY_1_0", env.path("registry.bin"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gst-launch-1.0");
        let usage = Usage::watch(child.id());
        Viewer {
            name: name.into(),
            child,
            out,
            messages,
            usage,
        }
    }

    /// The peak RSS seen, in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.usage.peak_rss_kb.load(Ordering::Relaxed) * 1024
    }

    /// The CPU time seen.
    pub fn cpu_time(&self) -> Duration {
        // USER_HZ is 100 on Linux.
        Duration::from_millis(self.usage.cpu_ticks.load(Ordering::Relaxed) * 10)
    }

    /// Waits for the pipeline to end by itself (EOS after ENDLIST).
    pub fn wait(&mut self, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} still running after {timeout:?}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Sends a signal (`STOP`, `CONT`) to the viewer's process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.name);
    }

    /// Waits until two successive `mesh-statistics` messages show `bytes-uploaded` growing.
    pub fn wait_until_uploading(&self, timeout: Duration) {
        let started = Instant::now();
        let mut last: Option<(usize, u64)> = None;
        while started.elapsed() < timeout {
            let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("mesh-statistics,"))
                .collect();
            if let Some(line) = lines.last() {
                let uploaded = Stats::parse(line).bytes_uploaded;
                match last {
                    Some((count, before)) if lines.len() > count && uploaded > before => return,
                    Some((count, _)) if lines.len() == count => {}
                    _ => last = Some((lines.len(), uploaded)),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} uploaded nothing for {timeout:?}:\n{}",
            self.name,
            self.log()
        );
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn output(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    /// The last `mesh-statistics` message the viewer printed.
    pub fn stats(&self) -> Stats {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("mesh-statistics,"))
            .unwrap_or_else(|| {
                panic!("{}: no mesh-statistics message:\n{}", self.name, self.log())
            });
        Stats::parse(line)
    }

    /// Text of the WARNING messages from meshsrc.
    pub fn warnings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("WARNING: from element") && l.contains("GstMeshSrc:m"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub bytes_cdn: u64,
    pub bytes_p2p: u64,
    pub bytes_uploaded: u64,
    pub segments_cdn: u64,
    pub segments_p2p: u64,
    pub segments_rejected: u64,
    pub peers_banned: u64,
}

impl Stats {
    /// Parses gst-launch's print of the structure: `field=(guint64)123`.
    pub fn parse(line: &str) -> Stats {
        let field = |name: &str| -> u64 {
            let key = format!("{name}=(guint64)");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("{name} missing in {line}"));
            line[at + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        };
        Stats {
            bytes_cdn: field("bytes-cdn"),
            bytes_p2p: field("bytes-p2p"),
            bytes_uploaded: field("bytes-uploaded"),
            segments_cdn: field("segments-cdn"),
            segments_p2p: field("segments-p2p"),
            segments_rejected: field("segments-rejected"),
            peers_banned: field("peers-banned"),
        }
    }
}

/// Asserts `got` is exactly live segments `first..=last` for some `first`, ending with the last
/// segment: the origin's bytes, in order, with no gap. Returns `first`.
pub fn assert_live_exact(origin: &Origin, what: &str, got: &[u8], last: u64) -> u64 {
    assert!(!got.is_empty(), "{what}: no output");
    let mut tail = Vec::new();
    for first in (0..=last).rev() {
        let mut segment = origin.live_segment_bytes(LIVE, first);
        segment.extend_from_slice(&tail);
        tail = segment;
        if tail.len() == got.len() {
            if tail == got {
                return first;
            }
            break;
        }
        if tail.len() > got.len() {
            break;
        }
    }
    // Say where it first differs from the best alignment, for the failure message.
    let first_diff = got.iter().zip(tail.iter()).position(|(a, b)| a != b);
    panic!(
        "{what}: {} bytes are not segments n..={last} of the origin (first difference at {first_diff:?})",
        got.len()
    );
}
