//! Defences against hostile peers and trackers, sans-IO (time is an input):
//!
//! - [`Bans`]: who is banned for the session, by peer id and by address, and the offences
//!   counted towards a ban. Shared by the delivery hub and the signalling tasks, so that a
//!   banned peer's new offers are ignored before they cost a handshake.
//! - [`TokenBucket`]: a rate limit (commands read from a peer, frames read from a tracker).
//! - [`WarningLimiter`]: at most one warning per kind per window, with a count of the rest.
//! - [`sdp_addresses`]: the addresses a session description names, checked against the bans
//!   before answering.

use super::Time;
use super::swarm::PeerId;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

/// Offences (protocol violations) that ban a peer id or an address.
pub const OFFENCES_TO_BAN: u32 = 2;
/// Peer ids kept banned; beyond that the oldest ban is forgotten.
pub const MAX_BANNED_PEER_IDS: usize = 4096;
/// Addresses kept banned; beyond that the oldest ban is forgotten.
pub const MAX_BANNED_ADDRESSES: usize = 1024;
/// Peer ids and addresses with offences counted; beyond that the oldest count is forgotten.
pub const MAX_OFFENDERS: usize = 1024;

/// A set that forgets its oldest member beyond `cap`.
#[derive(Debug)]
struct BoundedSet<T> {
    members: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: Clone + Eq + std::hash::Hash> BoundedSet<T> {
    fn new(cap: usize) -> Self {
        BoundedSet {
            members: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, value: T) -> bool {
        if !self.members.insert(value.clone()) {
            return false;
        }
        self.order.push_back(value);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.members.remove(&old);
            }
        }
        true
    }

    fn contains(&self, value: &T) -> bool {
        self.members.contains(value)
    }

    fn len(&self) -> usize {
        self.members.len()
    }
}

/// Counts per key, forgetting the oldest key beyond `cap`.
#[derive(Debug)]
struct BoundedCounts<T> {
    counts: BTreeMap<T, u32>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: Clone + Ord> BoundedCounts<T> {
    fn new(cap: usize) -> Self {
        BoundedCounts {
            counts: BTreeMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn add(&mut self, key: T) -> u32 {
        if !self.counts.contains_key(&key) {
            self.order.push_back(key.clone());
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.counts.remove(&old);
                }
            }
        }
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

/// Whether bans by `address` could hit other peers than the one banned. The host's own
/// loopback addresses (127.0.0.1, ::1) are where every viewer on this machine lives, and the
/// unspecified and link-local addresses name no host. Other 127.0.0.0/8 addresses count as
/// distinct hosts: the tests give hostile peers those.
pub fn address_is_shared(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| address_is_shared(IpAddr::V4(v4)))
        }
    }
}

/// What [`Bans::offence`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenceOutcome {
    /// Counted; the peer may come back (on a new link) once.
    Counted,
    /// That was one offence too many: the peer (and its address, unless shared) is banned.
    Banned,
}

#[derive(Debug)]
struct BanState {
    peer_ids: BoundedSet<PeerId>,
    addresses: BoundedSet<IpAddr>,
    offences_by_peer: BoundedCounts<PeerId>,
    offences_by_address: BoundedCounts<IpAddr>,
}

/// The session's bans, by peer id and by address, shared by the hub and the signalling tasks.
///
/// A ban covers the peer id, and the address the peer's packets came from (the selected ICE
/// candidate pair) unless that address is shared: see [`address_is_shared`], and the `shared`
/// argument of [`Bans::ban`] for addresses from which other peers are linked.
#[derive(Debug)]
pub struct Bans {
    state: Mutex<BanState>,
}

impl Default for Bans {
    fn default() -> Self {
        Bans::new()
    }
}

impl Bans {
    pub fn new() -> Self {
        Bans {
            state: Mutex::new(BanState {
                peer_ids: BoundedSet::new(MAX_BANNED_PEER_IDS),
                addresses: BoundedSet::new(MAX_BANNED_ADDRESSES),
                offences_by_peer: BoundedCounts::new(MAX_OFFENDERS),
                offences_by_address: BoundedCounts::new(MAX_OFFENDERS),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BanState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bans `peer` for the session, and `address` unless it is shared (by nature, or because
    /// `shared_with_others` says other peers are linked from it). Returns whether `peer` was not
    /// banned before.
    pub fn ban(&self, peer: &PeerId, address: Option<IpAddr>, shared_with_others: bool) -> bool {
        let mut state = self.lock();
        if let Some(address) = address.filter(|a| !shared_with_others && !address_is_shared(*a)) {
            state.addresses.insert(address);
        }
        state.peer_ids.insert(peer.clone())
    }

    /// Counts one offence against `peer` and its address (unless shared); at
    /// [`OFFENCES_TO_BAN`] for either, bans both.
    pub fn offence(
        &self,
        peer: &PeerId,
        address: Option<IpAddr>,
        shared_with_others: bool,
    ) -> OffenceOutcome {
        let address = address.filter(|a| !shared_with_others && !address_is_shared(*a));
        let mut state = self.lock();
        let by_peer = state.offences_by_peer.add(peer.clone());
        let by_address = address.map_or(0, |a| state.offences_by_address.add(a));
        if by_peer.max(by_address) < OFFENCES_TO_BAN {
            return OffenceOutcome::Counted;
        }
        if let Some(address) = address {
            state.addresses.insert(address);
        }
        state.peer_ids.insert(peer.clone());
        OffenceOutcome::Banned
    }

    pub fn is_peer_banned(&self, peer: &PeerId) -> bool {
        self.lock().peer_ids.contains(peer)
    }

    pub fn is_address_banned(&self, address: IpAddr) -> bool {
        self.lock().addresses.contains(&address)
    }

    /// Whether a peer with this id, offering these addresses, is to be ignored.
    pub fn refuses(&self, peer: &PeerId, addresses: &[IpAddr]) -> bool {
        let state = self.lock();
        state.peer_ids.contains(peer) || addresses.iter().any(|a| state.addresses.contains(a))
    }

    /// Peer ids banned.
    pub fn banned_peers(&self) -> usize {
        self.lock().peer_ids.len()
    }

    /// Addresses banned.
    pub fn banned_addresses(&self) -> usize {
        self.lock().addresses.len()
    }
}

/// The addresses of a session description's candidates (`a=candidate:` lines) and connection
/// lines (`c=`), each once; at most `limit` of them (the rest are not looked at).
pub fn sdp_addresses(sdp: &str, limit: usize) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for line in sdp.lines() {
        if out.len() >= limit {
            break;
        }
        let address = if let Some(candidate) = line.strip_prefix("a=candidate:") {
            candidate.split_whitespace().nth(4)
        } else if let Some(connection) = line.strip_prefix("c=") {
            connection.split_whitespace().nth(2)
        } else {
            None
        };
        if let Some(ip) = address.and_then(|a| a.parse::<IpAddr>().ok())
            && !ip.is_unspecified()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// The number of `a=candidate:` lines in a session description.
pub fn sdp_candidate_count(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .count()
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Time,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(rate: f64, burst: f64, now: Time) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Time) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens, which may leave the bucket in debt.
    pub fn take(&mut self, now: Time, n: f64) {
        self.refill(now);
        self.tokens -= n;
    }

    /// When the bucket holds at least `n` tokens again (`now` if it does; never for a bucket
    /// that refills at no rate).
    pub fn ready_at(&mut self, now: Time, n: f64) -> Option<Time> {
        self.refill(now);
        if self.tokens >= n {
            return Some(now);
        }
        (self.rate > 0.0).then(|| now + Duration::from_secs_f64((n - self.tokens) / self.rate))
    }

    /// Takes `n` tokens if the bucket holds them.
    pub fn try_take(&mut self, now: Time, n: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Warnings from one source, at most one per kind per `window`.
#[derive(Debug)]
pub struct WarningLimiter {
    window: Duration,
    /// Per kind: when the last one went out, and how many were held back since.
    kinds: BTreeMap<String, (Time, u64)>,
    max_kinds: usize,
}

/// Kinds of warnings tracked at most; a new kind beyond that forgets the oldest one.
pub const MAX_WARNING_KINDS: usize = 64;

impl WarningLimiter {
    pub fn new(window: Duration) -> Self {
        WarningLimiter {
            window,
            kinds: BTreeMap::new(),
            max_kinds: MAX_WARNING_KINDS,
        }
    }

    /// Whether a warning of `kind` may go out now: `Some(n)` with the number held back since the
    /// last one went out, `None` to hold it back.
    pub fn admit(&mut self, now: Time, kind: &str) -> Option<u64> {
        if let Some((last, held)) = self.kinds.get_mut(kind) {
            if now < *last + self.window {
                *held += 1;
                return None;
            }
            let suppressed = *held;
            *last = now;
            *held = 0;
            return Some(suppressed);
        }
        if self.kinds.len() >= self.max_kinds
            && let Some(oldest) = self
                .kinds
                .iter()
                .min_by_key(|(_, (last, _))| *last)
                .map(|(k, _)| k.clone())
        {
            self.kinds.remove(&oldest);
        }
        self.kinds.insert(kind.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn peer(n: u32) -> PeerId {
        PeerId::parse(&format!("-GM0001-{n:012}")).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_ban_covers_the_peer_id_and_an_address_of_its_own() {
        let bans = Bans::new();
        assert!(bans.ban(&peer(1), Some(ip("203.0.113.7")), false));
        assert!(!bans.ban(&peer(1), Some(ip("203.0.113.7")), false));
        assert!(bans.is_peer_banned(&peer(1)));
        assert!(bans.is_address_banned(ip("203.0.113.7")));
        // A new id from the banned address is refused; another address is not.
        assert!(bans.refuses(&peer(2), &[ip("198.51.100.1"), ip("203.0.113.7")]));
        assert!(!bans.refuses(&peer(2), &[ip("198.51.100.1")]));
        assert_eq!((bans.banned_peers(), bans.banned_addresses()), (1, 1));
    }

    #[test]
    fn shared_addresses_are_never_banned() {
        let bans = Bans::new();
        bans.ban(&peer(1), Some(ip("127.0.0.1")), false);
        bans.ban(&peer(2), Some(ip("::1")), false);
        bans.ban(&peer(3), Some(ip("169.254.1.1")), false);
        bans.ban(&peer(4), Some(ip("fe80::1")), false);
        bans.ban(&peer(5), Some(ip("::ffff:127.0.0.1")), false);
        // Other peers are linked from it.
        bans.ban(&peer(6), Some(ip("198.51.100.9")), true);
        assert_eq!(bans.banned_addresses(), 0);
        assert!(!bans.refuses(&peer(9), &[ip("127.0.0.1"), ip("198.51.100.9")]));
        // Loopback addresses other than the host's own stand for other hosts.
        bans.ban(&peer(7), Some(ip("127.0.0.2")), false);
        assert!(bans.is_address_banned(ip("127.0.0.2")));
    }

    #[test]
    fn offences_ban_at_the_second_by_id_or_by_address() {
        let bans = Bans::new();
        assert_eq!(
            bans.offence(&peer(1), Some(ip("127.0.0.1")), false),
            OffenceOutcome::Counted
        );
        assert!(!bans.is_peer_banned(&peer(1)));
        assert_eq!(
            bans.offence(&peer(1), Some(ip("127.0.0.1")), false),
            OffenceOutcome::Banned
        );
        assert!(bans.is_peer_banned(&peer(1)));
        assert_eq!(bans.banned_addresses(), 0);
        // A sybil: a new id each time, from one address of its own.
        let sybil = ip("127.0.0.3");
        assert_eq!(
            bans.offence(&peer(2), Some(sybil), false),
            OffenceOutcome::Counted
        );
        assert_eq!(
            bans.offence(&peer(3), Some(sybil), false),
            OffenceOutcome::Banned
        );
        assert!(bans.refuses(&peer(4), &[sybil]));
        assert!(!bans.is_peer_banned(&peer(2)));
    }

    #[test]
    fn ban_tables_are_bounded() {
        let bans = Bans::new();
        for n in 0..(MAX_BANNED_PEER_IDS as u32 + 10) {
            bans.ban(&peer(n), None, false);
        }
        assert_eq!(bans.banned_peers(), MAX_BANNED_PEER_IDS);
        assert!(!bans.is_peer_banned(&peer(0)));
        assert!(bans.is_peer_banned(&peer(MAX_BANNED_PEER_IDS as u32 + 9)));
        for n in 0..(MAX_OFFENDERS as u32 * 3) {
            bans.offence(&peer(100_000 + n), None, false);
        }
        assert_eq!(bans.lock().offences_by_peer.counts.len(), MAX_OFFENDERS);
    }

    #[test]
    fn sdp_addresses_lists_candidates_and_connection_lines_once() {
        let sdp = "v=0\r\nc=IN IP4 0.0.0.0\r\n\
                   a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 192.0.2.1 5001 typ host\r\n\
                   a=candidate:3 1 udp 1694498815 2001:db8::2 5002 typ srflx raddr 0.0.0.0 rport 0\r\n\
                   c=IN IP4 198.51.100.4\r\n\
                   a=candidate:4 1 udp 2130706431 host.local 5003 typ host\r\n";
        assert_eq!(
            sdp_addresses(sdp, 10),
            vec![ip("192.0.2.1"), ip("2001:db8::2"), ip("198.51.100.4")]
        );
        assert_eq!(sdp_addresses(sdp, 1), vec![ip("192.0.2.1")]);
        assert_eq!(sdp_candidate_count(sdp), 4);
    }

    #[test]
    fn token_bucket_limits_the_rate_and_the_burst() {
        let mut bucket = TokenBucket::new(10.0, 20.0, Duration::ZERO);
        let taken = (0..100)
            .filter(|_| bucket.try_take(Duration::ZERO, 1.0))
            .count();
        assert_eq!(taken, 20);
        assert_eq!(bucket.ready_at(Duration::ZERO, 1.0), Some(MS(100)));
        assert!(!bucket.try_take(MS(99), 1.0));
        assert!(bucket.try_take(MS(100), 1.0));
        // A long pause saves up at most the burst.
        assert_eq!(
            (0..100)
                .filter(|_| bucket.try_take(MS(60_000), 1.0))
                .count(),
            20
        );
        // Debt: a large message makes the next one wait.
        let mut bytes = TokenBucket::new(1_000.0, 1_000.0, Duration::ZERO);
        bytes.take(Duration::ZERO, 3_000.0);
        assert_eq!(bytes.ready_at(Duration::ZERO, 1.0), Some(MS(2_001)));
        let mut stuck = TokenBucket::new(0.0, 1.0, Duration::ZERO);
        stuck.take(Duration::ZERO, 1.0);
        assert_eq!(stuck.ready_at(MS(5), 1.0), None);
    }

    #[test]
    fn warnings_go_out_once_per_kind_per_window_with_the_count_held_back() {
        let mut limiter = WarningLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.admit(MS(0), "bad frame"), Some(0));
        for t in 1..=2_266 {
            assert_eq!(limiter.admit(MS(t), "bad frame"), None);
        }
        assert_eq!(limiter.admit(MS(5), "outage"), Some(0));
        assert_eq!(limiter.admit(MS(9_999), "bad frame"), None);
        assert_eq!(limiter.admit(MS(10_000), "bad frame"), Some(2_267));
        assert_eq!(limiter.admit(MS(20_000), "bad frame"), Some(0));
        for k in 0..(MAX_WARNING_KINDS * 2) {
            limiter.admit(MS(30_000 + k as u64), &format!("kind {k}"));
        }
        assert_eq!(limiter.kinds.len(), MAX_WARNING_KINDS);
    }
}
