//! Who uploads, and when, sans-IO.
//!
//! Each link has at most one upload: a new request from its peer replaces the one in progress,
//! as p2p-media-loader expects (raw data messages carry no request id, so a peer cannot take
//! two answers at once). Links take turns, one upload at a time over all links in the order
//! their requests came, so the first requester gets the segment at the full uplink rate and
//! can pass it on. The link holding the turn must hand a data message to the transport at
//! least once per `send_deadline`; one that does not drain (a peer that stops acknowledging)
//! is cut, and the next link's upload starts.

use crate::mesh::SegmentId;
use crate::scheduler::{PeerRef, RequestId, Time};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One answer to send: `segment data`, the data, `sending completed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub request_id: RequestId,
    pub segment: SegmentId,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadAction {
    /// The link's turn: send this upload.
    Send { link: PeerRef, upload: Upload },
    /// Stop what the link sends (replaced or cancelled); it sends nothing more of it.
    Stop { link: PeerRef },
    /// The link did not drain within the deadline: close it.
    Cut { link: PeerRef },
}

#[derive(Debug, Clone, Copy)]
struct Turn {
    link: PeerRef,
    request_id: RequestId,
    last_progress: Time,
}

#[derive(Debug)]
pub struct UploadTurns {
    send_deadline: Duration,
    /// Each waiting link's upload; at most one per link.
    waiting: BTreeMap<PeerRef, Upload>,
    /// Waiting links, in the order their requests came.
    queue: VecDeque<PeerRef>,
    turn: Option<Turn>,
}

impl UploadTurns {
    pub fn new(send_deadline: Duration) -> Self {
        UploadTurns {
            send_deadline,
            waiting: BTreeMap::new(),
            queue: VecDeque::new(),
            turn: None,
        }
    }

    /// The link sending now.
    #[cfg(test)]
    pub fn sending(&self) -> Option<PeerRef> {
        self.turn.map(|t| t.link)
    }

    /// Links waiting for their turn.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// A new request from `link`'s peer: `Some` upload to send, or `None` when it gets
    /// `segment absent`. Either way it replaces what the link was sending or waiting to send.
    pub fn request(
        &mut self,
        now: Time,
        link: PeerRef,
        upload: Option<Upload>,
    ) -> Vec<UploadAction> {
        let mut out = Vec::new();
        if self.turn.is_some_and(|t| t.link == link) {
            self.turn = None;
            out.push(UploadAction::Stop { link });
        }
        match upload {
            Some(upload) => {
                if self.waiting.insert(link, upload).is_none() {
                    self.queue.push_back(link);
                }
            }
            None => self.forget(link),
        }
        self.next(now, &mut out);
        out
    }

    /// `link`'s peer cancelled `request_id`.
    pub fn cancel(&mut self, now: Time, link: PeerRef, request_id: RequestId) -> Vec<UploadAction> {
        let mut out = Vec::new();
        if self.end_turn(link, request_id) {
            out.push(UploadAction::Stop { link });
        }
        if self
            .waiting
            .get(&link)
            .is_some_and(|u| u.request_id == request_id)
        {
            self.forget(link);
        }
        self.next(now, &mut out);
        out
    }

    /// Ends the turn if it is this upload's; whether it was.
    fn end_turn(&mut self, link: PeerRef, request_id: RequestId) -> bool {
        let ends = self
            .turn
            .is_some_and(|t| t.link == link && t.request_id == request_id);
        if ends {
            self.turn = None;
        }
        ends
    }

    /// The sending link handed another data message to the transport.
    pub fn progress(&mut self, now: Time, link: PeerRef, request_id: RequestId) {
        if let Some(turn) = &mut self.turn
            && turn.link == link
            && turn.request_id == request_id
        {
            turn.last_progress = now;
        }
    }

    /// The sending link handed all of its upload to the transport.
    pub fn done(&mut self, now: Time, link: PeerRef, request_id: RequestId) -> Vec<UploadAction> {
        let mut out = Vec::new();
        self.end_turn(link, request_id);
        self.next(now, &mut out);
        out
    }

    /// The link closed.
    pub fn link_gone(&mut self, now: Time, link: PeerRef) -> Vec<UploadAction> {
        let mut out = Vec::new();
        if self.turn.is_some_and(|t| t.link == link) {
            self.turn = None;
        }
        self.forget(link);
        self.next(now, &mut out);
        out
    }

    /// Cuts the sending link if it missed its deadline.
    pub fn poll(&mut self, now: Time) -> Vec<UploadAction> {
        let mut out = Vec::new();
        if let Some(turn) = self.turn
            && now >= turn.last_progress + self.send_deadline
        {
            self.turn = None;
            self.forget(turn.link);
            out.push(UploadAction::Cut { link: turn.link });
        }
        self.next(now, &mut out);
        out
    }

    /// When [`poll`](Self::poll) may have something to do.
    pub fn next_wakeup(&self) -> Option<Time> {
        self.turn.map(|t| t.last_progress + self.send_deadline)
    }

    fn forget(&mut self, link: PeerRef) {
        if self.waiting.remove(&link).is_some() {
            self.queue.retain(|l| *l != link);
        }
    }

    fn next(&mut self, now: Time, out: &mut Vec<UploadAction>) {
        if self.turn.is_some() {
            return;
        }
        while let Some(link) = self.queue.pop_front() {
            if let Some(upload) = self.waiting.remove(&link) {
                self.turn = Some(Turn {
                    link,
                    request_id: upload.request_id,
                    last_progress: now,
                });
                out.push(UploadAction::Send { link, upload });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const DEADLINE: Duration = Duration::from_secs(3);

    fn upload(request_id: RequestId) -> Upload {
        Upload {
            request_id,
            segment: 7,
            data: Bytes::from_static(b"segment"),
        }
    }

    fn send(link: PeerRef, request_id: RequestId) -> UploadAction {
        UploadAction::Send {
            link,
            upload: upload(request_id),
        }
    }

    #[test]
    fn links_take_turns_in_the_order_their_requests_came() {
        let mut turns = UploadTurns::new(DEADLINE);
        assert_eq!(turns.request(MS(0), 1, Some(upload(10))), vec![send(1, 10)]);
        assert!(turns.request(MS(1), 2, Some(upload(20))).is_empty());
        assert!(turns.request(MS(2), 3, Some(upload(30))).is_empty());
        assert_eq!(turns.waiting(), 2);
        // A late completion of something else changes nothing.
        assert!(turns.done(MS(3), 1, 11).is_empty());
        assert_eq!(turns.done(MS(4), 1, 10), vec![send(2, 20)]);
        assert_eq!(turns.done(MS(5), 2, 20), vec![send(3, 30)]);
        assert!(turns.done(MS(6), 3, 30).is_empty());
        assert_eq!(turns.sending(), None);
    }

    #[test]
    fn a_new_request_from_the_same_peer_replaces_the_upload_in_progress() {
        let mut turns = UploadTurns::new(DEADLINE);
        turns.request(MS(0), 1, Some(upload(10)));
        turns.request(MS(0), 2, Some(upload(20)));
        // Link 1's peer asks again: its upload stops, and the new one waits behind link 2.
        assert_eq!(
            turns.request(MS(1), 1, Some(upload(11))),
            vec![UploadAction::Stop { link: 1 }, send(2, 20)]
        );
        // Link 2 waiting asks again: it keeps its place with the new request.
        turns.request(MS(2), 3, Some(upload(30)));
        assert_eq!(
            turns.request(MS(3), 1, Some(upload(12))),
            Vec::<UploadAction>::new()
        );
        assert_eq!(turns.done(MS(4), 2, 20), vec![send(1, 12)]);
        // A request answered "absent" stops the current one too.
        assert_eq!(
            turns.request(MS(5), 1, None),
            vec![UploadAction::Stop { link: 1 }, send(3, 30)]
        );
    }

    #[test]
    fn a_cancel_stops_or_unqueues_only_its_request() {
        let mut turns = UploadTurns::new(DEADLINE);
        turns.request(MS(0), 1, Some(upload(10)));
        turns.request(MS(0), 2, Some(upload(20)));
        assert!(turns.cancel(MS(1), 1, 99).is_empty());
        assert!(turns.cancel(MS(1), 2, 99).is_empty());
        assert!(turns.cancel(MS(1), 2, 20).is_empty());
        assert_eq!(turns.waiting(), 0);
        assert_eq!(
            turns.cancel(MS(2), 1, 10),
            vec![UploadAction::Stop { link: 1 }]
        );
        assert_eq!(turns.sending(), None);
    }

    #[test]
    fn a_link_that_does_not_drain_is_cut_and_the_others_go_on() {
        let mut turns = UploadTurns::new(DEADLINE);
        turns.request(MS(0), 1, Some(upload(10)));
        turns.request(MS(0), 2, Some(upload(20)));
        turns.progress(MS(1_000), 1, 10);
        // Progress for another request does not count.
        turns.progress(MS(2_000), 1, 99);
        assert_eq!(turns.next_wakeup(), Some(MS(4_000)));
        assert!(turns.poll(MS(3_999)).is_empty());
        assert_eq!(
            turns.poll(MS(4_000)),
            vec![UploadAction::Cut { link: 1 }, send(2, 20)]
        );
        assert_eq!(turns.next_wakeup(), Some(MS(7_000)));
        // A closed link gives its turn up.
        turns.request(MS(4_100), 3, Some(upload(30)));
        assert_eq!(turns.link_gone(MS(4_200), 2), vec![send(3, 30)]);
        assert!(turns.link_gone(MS(4_300), 9).is_empty());
    }
}
