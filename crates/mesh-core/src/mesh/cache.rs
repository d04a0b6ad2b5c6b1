//! The byte-bounded in-memory segment store (`cache-size`) that peers are served from.
//!
//! Segments are keyed by (swarm, segment id). The store never holds more than its budget of
//! segment bytes. To make room it evicts, first, segments behind their swarm's playhead (ids
//! below the playhead set with [`SegmentCache::set_playhead`]), oldest stored first; then the
//! oldest stored segments of any swarm. A segment larger than the whole budget is not stored.

use super::SegmentId;
use super::swarm::InfoHash;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
struct Entry {
    data: Bytes,
    /// Insertion order: smaller is older.
    stamp: u64,
}

/// What [`SegmentCache::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted<S> {
    /// False when the segment is larger than the budget.
    pub stored: bool,
    /// Segments evicted to make room, in eviction order.
    pub evicted: Vec<(S, SegmentId)>,
}

/// A byte-bounded segment store, keyed by swarm (an [`InfoHash`] unless chosen otherwise) and
/// segment id.
#[derive(Debug)]
pub struct SegmentCache<S = InfoHash> {
    budget: usize,
    used: usize,
    swarms: HashMap<S, BTreeMap<SegmentId, Entry>>,
    /// stamp → key, oldest first.
    order: BTreeMap<u64, (S, SegmentId)>,
    playheads: HashMap<S, SegmentId>,
    next_stamp: u64,
}

impl<S: Clone + Eq + Hash> SegmentCache<S> {
    /// A store holding at most `budget` bytes of segment data.
    pub fn new(budget: usize) -> Self {
        SegmentCache {
            budget,
            used: 0,
            swarms: HashMap::new(),
            order: BTreeMap::new(),
            playheads: HashMap::new(),
            next_stamp: 0,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes of segment data held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Number of segments held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Stores a segment, evicting others as needed. Storing an id already held replaces it.
    /// A segment larger than the budget is not stored and changes nothing.
    pub fn insert(&mut self, swarm: S, id: SegmentId, data: Bytes) -> Inserted<S> {
        if data.len() > self.budget {
            return Inserted {
                stored: false,
                evicted: Vec::new(),
            };
        }
        self.remove(&swarm, id);
        let evicted = self.evict(self.budget - data.len());
        self.used += data.len();
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(stamp, (swarm.clone(), id));
        self.swarms
            .entry(swarm)
            .or_default()
            .insert(id, Entry { data, stamp });
        Inserted {
            stored: true,
            evicted,
        }
    }

    /// The segment's bytes (a cheap clone of the stored buffer).
    pub fn get(&self, swarm: &S, id: SegmentId) -> Option<Bytes> {
        self.swarms.get(swarm)?.get(&id).map(|e| e.data.clone())
    }

    pub fn contains(&self, swarm: &S, id: SegmentId) -> bool {
        self.swarms.get(swarm).is_some_and(|s| s.contains_key(&id))
    }

    /// The ids held for a swarm, ascending: the `l` list of a segments announcement.
    pub fn held_ids(&self, swarm: &S) -> Vec<SegmentId> {
        self.swarms
            .get(swarm)
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Records where a swarm's playback is: segments with smaller ids are behind it and go
    /// first when room is needed.
    pub fn set_playhead(&mut self, swarm: S, id: SegmentId) {
        self.playheads.insert(swarm, id);
    }

    pub fn playhead(&self, swarm: &S) -> Option<SegmentId> {
        self.playheads.get(swarm).copied()
    }

    /// Removes one segment.
    pub fn remove(&mut self, swarm: &S, id: SegmentId) -> Option<Bytes> {
        let segments = self.swarms.get_mut(swarm)?;
        let entry = segments.remove(&id)?;
        if segments.is_empty() {
            self.swarms.remove(swarm);
        }
        self.order.remove(&entry.stamp);
        self.used -= entry.data.len();
        Some(entry.data)
    }

    /// Removes a swarm's segments and playhead; returns how many segments went.
    pub fn remove_swarm(&mut self, swarm: &S) -> usize {
        self.playheads.remove(swarm);
        let Some(segments) = self.swarms.remove(swarm) else {
            return 0;
        };
        for entry in segments.values() {
            self.order.remove(&entry.stamp);
            self.used -= entry.data.len();
        }
        segments.len()
    }

    /// Changes the budget, evicting as needed.
    pub fn set_budget(&mut self, budget: usize) -> Vec<(S, SegmentId)> {
        self.budget = budget;
        self.evict(budget)
    }

    /// Evicts until at most `limit` bytes are held.
    fn evict(&mut self, limit: usize) -> Vec<(S, SegmentId)> {
        if self.used <= limit {
            return Vec::new();
        }
        let mut excess = self.used - limit;
        let mut victims = Vec::new();
        // Behind the playhead first, oldest first; then the oldest of the rest.
        for behind_only in [true, false] {
            for (swarm, id) in self.order.values() {
                if excess == 0 {
                    break;
                }
                let behind = self.playheads.get(swarm).is_some_and(|p| id < p);
                if behind != behind_only {
                    continue;
                }
                let size = self.swarms[swarm][id].data.len();
                victims.push((swarm.clone(), *id));
                excess = excess.saturating_sub(size);
            }
        }
        for (swarm, id) in &victims {
            self.remove(swarm, *id);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(len: usize) -> Bytes {
        Bytes::from(vec![len as u8; len])
    }

    type Cache = SegmentCache<&'static str>;

    #[test]
    fn exact_byte_accounting() {
        let mut cache = Cache::new(1000);
        assert!(cache.insert("a", 1, seg(300)).stored);
        assert!(cache.insert("a", 2, seg(300)).stored);
        assert!(cache.insert("b", 7, seg(400)).stored);
        assert_eq!((cache.used(), cache.len()), (1000, 3));
        assert_eq!(cache.get(&"a", 2), Some(seg(300)));
        assert!(cache.contains(&"b", 7) && !cache.contains(&"b", 1) && !cache.contains(&"c", 7));
        // Replacing an id adjusts the bytes and evicts nothing when it fits.
        let r = cache.insert("a", 2, seg(100));
        assert!(r.evicted.is_empty());
        assert_eq!((cache.used(), cache.len()), (800, 3));
        assert_eq!(cache.remove(&"a", 1), Some(seg(300)));
        assert_eq!(cache.remove(&"a", 1), None);
        assert_eq!((cache.used(), cache.len()), (500, 2));
        assert_eq!(cache.remove_swarm(&"b"), 1);
        assert_eq!((cache.used(), cache.len()), (100, 1));
        assert_eq!(cache.held_ids(&"a"), vec![2]);
        assert_eq!(cache.held_ids(&"b"), Vec::<SegmentId>::new());
    }

    #[test]
    fn oldest_go_first_without_playhead() {
        let mut cache = Cache::new(1000);
        for id in 1..=4 {
            cache.insert("a", id, seg(250));
        }
        let r = cache.insert("a", 5, seg(250));
        assert_eq!(r.evicted, vec![("a", 1)]);
        // 600 bytes need three 250-byte segments out (1000 − 600 = 400 < 3 × 250 left).
        let r = cache.insert("b", 1, seg(600));
        assert_eq!(r.evicted, vec![("a", 2), ("a", 3), ("a", 4)]);
        assert_eq!((cache.used(), cache.len()), (850, 2));
        assert_eq!(cache.held_ids(&"a"), vec![5]);
    }

    #[test]
    fn behind_the_playhead_goes_first() {
        let mut cache = Cache::new(1000);
        // Stored out of order: 20, 10, 30, 11 in swarm a; 5 in b.
        cache.insert("a", 20, seg(200));
        cache.insert("b", 5, seg(200));
        cache.insert("a", 10, seg(200));
        cache.insert("a", 30, seg(200));
        cache.insert("a", 11, seg(200));
        cache.set_playhead("a", 20);
        // Behind a's playhead: 10 then 11 (stored order), although b:5 and a:20 are older.
        let r = cache.insert("a", 40, seg(300));
        assert_eq!(r.evicted, vec![("a", 10), ("a", 11)]);
        assert_eq!(cache.used(), 900);
        // Nothing behind any more: the oldest overall, a:20 then b:5.
        let r = cache.insert("a", 41, seg(400));
        assert_eq!(r.evicted, vec![("a", 20), ("b", 5)]);
        assert_eq!(cache.used(), 900);
        assert_eq!(cache.held_ids(&"a"), vec![30, 40, 41]);
        // The segment at the playhead is not behind it.
        cache.set_playhead("a", 40);
        let r = cache.insert("b", 6, seg(400));
        assert_eq!(r.evicted, vec![("a", 30), ("a", 40)]);
        assert_eq!((cache.used(), cache.playhead(&"a")), (800, Some(40)));
    }

    #[test]
    fn never_exceeds_the_budget() {
        let mut cache = Cache::new(10_000);
        let mut x: u64 = 7;
        for i in 0..2000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 3000) as usize;
            let swarm = ["a", "b", "c"][(x % 3) as usize];
            if i % 10 == 0 {
                cache.set_playhead(swarm, i - 20);
            }
            let before = cache.used();
            let r = cache.insert(swarm, i, seg(len));
            assert!(r.stored);
            let freed: usize = r.evicted.len();
            assert!(cache.used() <= 10_000);
            assert!(freed > 0 || before + len <= 10_000);
            let total: usize = ["a", "b", "c"]
                .iter()
                .flat_map(|s| cache.held_ids(s).into_iter().map(move |id| (*s, id)))
                .map(|(s, id)| cache.get(&s, id).unwrap().len())
                .sum();
            assert_eq!(total, cache.used());
        }
    }

    #[test]
    fn too_large_segment_is_not_stored() {
        let mut cache = Cache::new(500);
        cache.insert("a", 1, seg(400));
        let r = cache.insert("a", 2, seg(501));
        assert_eq!(
            r,
            Inserted {
                stored: false,
                evicted: vec![]
            }
        );
        assert_eq!((cache.used(), cache.len()), (400, 1));
        // Exactly the budget fits, evicting everything else.
        let r = cache.insert("a", 3, seg(500));
        assert!(r.stored);
        assert_eq!(r.evicted, vec![("a", 1)]);
        assert_eq!(cache.used(), 500);
        let mut empty = Cache::new(0);
        assert!(!empty.insert("a", 1, seg(1)).stored);
        assert!(empty.insert("a", 1, Bytes::new()).stored);
    }

    #[test]
    fn shrinking_the_budget_evicts() {
        let mut cache = Cache::new(1000);
        for id in 0..5 {
            cache.insert("a", id, seg(200));
        }
        cache.set_playhead("a", 3);
        assert_eq!(cache.set_budget(500), vec![("a", 0), ("a", 1), ("a", 2)]);
        assert_eq!((cache.used(), cache.budget()), (400, 500));
    }
}
