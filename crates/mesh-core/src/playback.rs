//! The playback policy of a track driver, sans-IO: when a live playlist is reloaded, when each
//! segment is due, which live segments are requested ahead, and when the published hashes are
//! fetched again. The plugin's track driver and the simulator both decide with these.
//!
//! Time is a [`Time`], the session's clock (the delivery engine's).

use crate::mesh::Time;
use std::time::Duration;

/// Live segments requested ahead of the one the driver waits for, with the mesh.
pub const LIVE_FETCH_AHEAD: u64 = 3;
/// Consecutive failed live playlist reloads before the stream counts as gone.
pub const MAX_FAILED_RELOADS: u32 = 5;
/// The published segment hashes are fetched again at most this often when a live segment is
/// missing from them.
pub const HASHES_REFETCH: Duration = Duration::from_secs(1);

/// How long after the last reload a live playlist is reloaded (RFC 8216 §6.3.4): its last
/// segment's duration (the target duration without one), or half that while it is unchanged,
/// as hlsdemux2 does.
pub fn reload_interval(
    last_segment: Option<Duration>,
    target: Duration,
    unchanged: u32,
) -> Duration {
    let base = last_segment.filter(|d| !d.is_zero()).unwrap_or(target);
    if unchanged > 0 { base / 2 } else { base }
}

/// What a failed reload means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadFailure {
    /// Warn and try again on schedule; this many failed in a row.
    Retry(u32),
    /// [`MAX_FAILED_RELOADS`] in a row: the stream is gone.
    GiveUp,
}

/// A live playlist's reload schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloads {
    last: Time,
    unchanged: u32,
    failed: u32,
}

impl Reloads {
    /// The playlist was (first) loaded at `now`.
    pub fn new(now: Time) -> Reloads {
        Reloads {
            last: now,
            unchanged: 0,
            failed: 0,
        }
    }

    /// When the next reload is due, for a playlist whose last segment lasts `last_segment`.
    pub fn due(&self, last_segment: Option<Duration>, target: Duration) -> Time {
        self.last + reload_interval(last_segment, target, self.unchanged)
    }

    /// A reload starts at `now`.
    pub fn started(&mut self, now: Time) {
        self.last = now;
    }

    /// A reload succeeded; `changed` is whether it lists a new last segment or a new end.
    pub fn succeeded(&mut self, changed: bool) {
        self.failed = 0;
        if changed {
            self.unchanged = 0;
        } else {
            self.unchanged += 1;
        }
    }

    /// A reload failed.
    pub fn failed(&mut self) -> ReloadFailure {
        self.failed += 1;
        if self.failed >= MAX_FAILED_RELOADS {
            ReloadFailure::GiveUp
        } else {
            ReloadFailure::Retry(self.failed)
        }
    }

    /// Reloads in a row that found the playlist unchanged.
    pub fn unchanged(&self) -> u32 {
        self.unchanged
    }
}

/// When segments are due. Live: in real time from the live starting point, whatever the sink's
/// sync, the origin fixed by the first segment asked for. VOD: when the player reaches them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    live_origin: Option<Time>,
}

impl Deadlines {
    /// The deadline of the live segment at `pts`, asked for at `now`.
    pub fn live(&mut self, now: Time, pts: Duration) -> Time {
        *self.live_origin.get_or_insert(now.saturating_sub(pts)) + pts
    }

    /// The session time at which live pts 0 is needed, once the first segment fixed it.
    pub fn live_origin(&self) -> Option<Time> {
        self.live_origin
    }

    /// The deadline of the VOD segment at `pts`, with `played` of the stream taken by the pad.
    pub fn vod(now: Time, pts: Duration, played: Duration) -> Time {
        now + pts.saturating_sub(played)
    }
}

/// A live segment to request ahead, with its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadRequest {
    pub sequence: u64,
    pub deadline: Time,
}

/// The live segments to request now: `current` (at `pts`) and those after it that the playlist
/// lists (`duration_of` gives a listed segment's duration), up to `count` after it (the
/// element's is [`LIVE_FETCH_AHEAD`]) and while their pts stays within `room` (what the pad
/// took plus `max-buffering-time`), each with its own deadline from `origin`, so they wait for
/// peers while `current` loads. Only once the first segment fixed the deadlines' origin, and
/// only with the mesh: the CDN alone gains nothing from it.
pub fn fetch_ahead(
    current: u64,
    count: u64,
    pts: Duration,
    origin: Time,
    room: Duration,
    duration_of: impl Fn(u64) -> Option<Duration>,
) -> Vec<AheadRequest> {
    let mut ahead = Vec::new();
    let (mut sequence, mut pts) = (current, pts);
    loop {
        let Some(duration) = duration_of(sequence) else {
            return ahead;
        };
        ahead.push(AheadRequest {
            sequence,
            deadline: origin + pts,
        });
        pts += duration;
        sequence += 1;
        if sequence > current + count || pts > room || duration_of(sequence).is_none() {
            return ahead;
        }
    }
}

/// When the published segment hashes are fetched again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashRefetch {
    fetched_at: Option<Time>,
}

impl HashRefetch {
    /// Whether to fetch the hashes now for a segment they lack: at most every
    /// [`HASHES_REFETCH`], and once held, only for live streams (VOD hashes do not grow).
    pub fn due(&self, now: Time, held: bool, live: bool) -> bool {
        let spaced = self
            .fetched_at
            .is_none_or(|t| now.saturating_sub(t) >= HASHES_REFETCH);
        spaced && (live || !held)
    }

    /// A fetch starts at `now`.
    pub fn started(&mut self, now: Time) {
        self.fetched_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn reloads_follow_the_last_segment_and_halve_while_unchanged() {
        let mut reloads = Reloads::new(s(10.0));
        assert_eq!(reloads.due(Some(s(2.5)), s(3.0)), s(12.5));
        assert_eq!(reloads.due(None, s(3.0)), s(13.0));
        assert_eq!(reloads.due(Some(Duration::ZERO), s(3.0)), s(13.0));
        reloads.started(s(12.5));
        reloads.succeeded(false);
        assert_eq!(reloads.unchanged(), 1);
        assert_eq!(reloads.due(Some(s(2.5)), s(3.0)), s(13.75));
        reloads.succeeded(true);
        assert_eq!(reloads.due(Some(s(2.5)), s(3.0)), s(15.0));
    }

    #[test]
    fn the_fifth_failed_reload_in_a_row_gives_up() {
        let mut reloads = Reloads::new(Duration::ZERO);
        for n in 1..MAX_FAILED_RELOADS {
            assert_eq!(reloads.failed(), ReloadFailure::Retry(n));
        }
        reloads.succeeded(true);
        for n in 1..MAX_FAILED_RELOADS {
            assert_eq!(reloads.failed(), ReloadFailure::Retry(n));
        }
        assert_eq!(reloads.failed(), ReloadFailure::GiveUp);
    }

    #[test]
    fn the_first_live_segment_fixes_the_origin_of_every_deadline() {
        let mut deadlines = Deadlines::default();
        assert_eq!(deadlines.live_origin(), None);
        assert_eq!(deadlines.live(s(5.0), s(2.0)), s(5.0));
        assert_eq!(deadlines.live_origin(), Some(s(3.0)));
        // Later segments are due on the same clock, however late they are asked for.
        assert_eq!(deadlines.live(s(9.0), s(4.0)), s(7.0));
        assert_eq!(Deadlines::vod(s(5.0), s(8.0), s(6.0)), s(7.0));
        assert_eq!(Deadlines::vod(s(5.0), s(2.0), s(6.0)), s(5.0));
    }

    #[test]
    fn fetch_ahead_stops_at_the_playlist_the_count_and_the_room() {
        let listed = |last: u64| move |seq: u64| (10..=last).contains(&seq).then_some(s(2.0));
        let seqs = |v: Vec<AheadRequest>| {
            v.iter()
                .map(|a| (a.sequence, a.deadline))
                .collect::<Vec<_>>()
        };
        // Four listed after 10: the current one and three ahead.
        assert_eq!(
            seqs(fetch_ahead(10, 3, s(20.0), s(1.0), s(100.0), listed(20))),
            vec![(10, s(21.0)), (11, s(23.0)), (12, s(25.0)), (13, s(27.0))]
        );
        // The playlist lists only one after the current one.
        assert_eq!(
            seqs(fetch_ahead(10, 3, s(20.0), s(1.0), s(100.0), listed(11))),
            vec![(10, s(21.0)), (11, s(23.0))]
        );
        // The room ends at pts 24: segment 12 starts at 24, inside it; 13 at 26 is not.
        assert_eq!(
            seqs(fetch_ahead(10, 3, s(20.0), s(1.0), s(24.0), listed(20))),
            vec![(10, s(21.0)), (11, s(23.0)), (12, s(25.0))]
        );
        assert!(fetch_ahead(9, 3, s(0.0), s(0.0), s(100.0), listed(20)).is_empty());
        assert_eq!(
            seqs(fetch_ahead(10, 0, s(20.0), s(1.0), s(100.0), listed(20))),
            vec![(10, s(21.0))]
        );
    }

    #[test]
    fn hashes_are_fetched_again_at_most_every_second_and_for_vod_once() {
        let mut hashes = HashRefetch::default();
        assert!(hashes.due(s(0.0), false, false));
        hashes.started(s(0.0));
        assert!(!hashes.due(s(0.5), true, true));
        assert!(hashes.due(s(1.0), true, true));
        assert!(!hashes.due(s(1.0), true, false), "VOD hashes do not grow");
        assert!(
            hashes.due(s(1.0), false, false),
            "but a failed fetch is tried again"
        );
    }
}
