//! Network namespaces for `--netns`: one per viewer slot, each with a veth into a bridge that
//! carries the origin and the tracker, shaped with tc. Everything made here is removed on drop;
//! leftovers of a bench that was killed are removed at the next start.
//!
//! Shaping, per viewer: uplink and downlink rates (HTB, or netem's rate), RTT (netem delay,
//! half each way) and loss on each direction of the viewer's link (netem, or nftables random
//! drop when the kernel has no netem).
//! The origin's link is capped by HTB on the bridge, which only traffic the host itself sends
//! into the bridge (the origin and the tracker) passes through.

use serde::Serialize;
use std::net::Ipv4Addr;
use std::process::Command;

/// Every name made here starts with this, then the bench's process id.
const PREFIX: &str = "gmb";
/// 10.213.0.0/16: the bridge is .0.1, viewer slot i is 10.213.(i/250).(i%250+2).
const SUBNET: [u8; 2] = [10, 213];

#[derive(Debug, Clone, Serialize)]
pub struct Shaping {
    pub up_mbit: f64,
    pub down_mbit: f64,
    pub rtt_min_ms: u32,
    pub rtt_max_ms: u32,
    pub loss_pct: f64,
    pub origin_mbit: f64,
}

/// What could be applied on this kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub rates: bool,
    pub rtt: bool,
    pub loss: bool,
    pub notes: Vec<String>,
}

pub struct Slot {
    pub ns: String,
    /// The veth end on the bridge.
    host_end: String,
    pub ip: Ipv4Addr,
    pub rtt_ms: u32,
}

pub struct Network {
    bridge: String,
    pub host_ip: Ipv4Addr,
    pub slots: Vec<Slot>,
    pub applied: Applied,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn htb(dev: &str, ns: Option<&str>, mbit: f64) -> Result<(), String> {
    let rate = format!("{}kbit", (mbit * 1000.0).round() as u64);
    let qdisc = [
        "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
    ];
    let class = [
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &rate, "ceil",
        &rate,
    ];
    match ns {
        Some(ns) => {
            in_ns(ns, "tc", &qdisc)?;
            in_ns(ns, "tc", &class)
        }
        None => {
            run("tc", &qdisc)?;
            run("tc", &class)
        }
    }
}

/// netem with delay, loss and rate on `dev`; Err when the kernel lacks sch_netem.
fn netem(
    dev: &str,
    ns: Option<&str>,
    delay_ms: u32,
    loss_pct: f64,
    mbit: f64,
) -> Result<(), String> {
    let delay = format!("{delay_ms}ms");
    let loss = format!("{loss_pct}%");
    let rate = format!("{}kbit", (mbit * 1000.0).round() as u64);
    let args = [
        "qdisc", "add", "dev", dev, "root", "netem", "delay", &delay, "loss", &loss, "rate", &rate,
        "limit", "10000",
    ];
    match ns {
        Some(ns) => in_ns(ns, "tc", &args),
        None => run("tc", &args),
    }
}

/// Random drop of `loss_pct` of the packets each way inside `ns`, with nftables.
fn nft_loss(ns: &str, loss_pct: f64) -> Result<(), String> {
    let per_100k = ((loss_pct * 1000.0).round() as u64).to_string();
    in_ns(ns, "nft", &["add", "table", "inet", "gmbloss"])?;
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        let spec = format!("{{ type filter hook {hook} priority 0; }}");
        in_ns(
            ns,
            "nft",
            &["add", "chain", "inet", "gmbloss", chain, &spec],
        )?;
        in_ns(
            ns,
            "nft",
            &[
                "add", "rule", "inet", "gmbloss", chain, "numgen", "random", "mod", "100000", "<",
                &per_100k, "drop",
            ],
        )?;
    }
    Ok(())
}

/// nftables for the loss fallback, installed through apt-get when missing.
fn ensure_nft() -> Result<(), String> {
    if Command::new("nft").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("swarm-bench: installing nftables (apt-get) for packet loss emulation");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "nftables"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("apt-get install nftables failed".into())
    }
}

fn pid_alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// The process id in a name made by a bench: `gmb<pid>...`.
fn owner_pid(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!pid.is_empty()).then_some(pid)
}

/// Removes the namespaces and links of benches that are no longer running.
fn remove_leftovers() {
    for line in output("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if owner_pid(name).is_some_and(|pid| !pid_alive(&pid)) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
    for line in output("ip", &["-o", "link", "show"]).lines() {
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or(""))
        else {
            continue;
        };
        if owner_pid(name).is_some_and(|pid| !pid_alive(&pid)) {
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

impl Network {
    /// Makes `count` shaped viewer slots. `pick_rtt` draws each slot's RTT.
    pub fn create(
        count: usize,
        shaping: &Shaping,
        mut pick_rtt: impl FnMut() -> u32,
    ) -> Result<Network, String> {
        if count > 250 * 250 {
            return Err("too many viewer slots".into());
        }
        remove_leftovers();
        let pid = std::process::id();
        let bridge = format!("{PREFIX}{pid}br");
        let host_ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], 0, 1);
        let mut network = Network {
            bridge: bridge.clone(),
            host_ip,
            slots: Vec::new(),
            applied: Applied {
                rates: true,
                rtt: true,
                loss: shaping.loss_pct > 0.0,
                notes: Vec::new(),
            },
        };
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/16"), "dev", &bridge],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        htb(&bridge, None, shaping.origin_mbit)?;
        let mut use_netem = true;
        for i in 0..count {
            let ns = format!("{PREFIX}{pid}n{i}");
            let host_end = format!("{PREFIX}{pid}v{i}");
            let ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], (i / 250) as u8, (i % 250 + 2) as u8);
            let rtt_ms = pick_rtt();
            run("ip", &["netns", "add", &ns])?;
            network.slots.push(Slot {
                ns: ns.clone(),
                host_end: host_end.clone(),
                ip,
                rtt_ms,
            });
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &host_end, "master", &bridge, "up"])?;
            in_ns(
                &ns,
                "ip",
                &["addr", "add", &format!("{ip}/16"), "dev", "eth0"],
            )?;
            in_ns(&ns, "ip", &["link", "set", "eth0", "up"])?;
            in_ns(&ns, "ip", &["link", "set", "lo", "up"])?;
            // Half the RTT each way; the uplink leaves the namespace's eth0, the downlink
            // leaves the bridge port.
            let half = rtt_ms / 2;
            if use_netem {
                match netem("eth0", Some(&ns), half, shaping.loss_pct, shaping.up_mbit) {
                    Ok(()) => {
                        netem(
                            &host_end,
                            None,
                            rtt_ms - half,
                            shaping.loss_pct,
                            shaping.down_mbit,
                        )?;
                        continue;
                    }
                    Err(e) if i == 0 => {
                        use_netem = false;
                        network.applied.rtt = false;
                        network.applied.notes.push(format!(
                            "no netem on this kernel ({e}): RTT is not emulated; rates by HTB, loss by nftables"
                        ));
                        if shaping.loss_pct > 0.0 {
                            ensure_nft()?;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            htb("eth0", Some(&ns), shaping.up_mbit)?;
            htb(&host_end, None, shaping.down_mbit)?;
            if shaping.loss_pct > 0.0 {
                nft_loss(&ns, shaping.loss_pct)?;
            }
        }
        Ok(network)
    }

    /// `ip netns exec <ns>` as a command prefix for slot `i`.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.slots[i].ns.clone(),
        ]
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting the host end at once: a namespace's own links go asynchronously.
        for slot in &self.slots {
            let _ = run("ip", &["link", "del", &slot.host_end]);
            let _ = run("ip", &["netns", "del", &slot.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
