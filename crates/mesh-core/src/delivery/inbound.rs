//! What one link's peer answers to our requests, sans-IO.
//!
//! A link carries at most one request of ours at a time (p2p-media-loader serves one transfer
//! per direction). Each answer is checked against that request: a `segment data` header must
//! be for it (or for one we cancelled), with the size we expect; data must follow a header and
//! stay within its size; `sending completed` must come after all of it. Anything else is an
//! offence, and the link is closed.
//!
//! A header for another request while one is incomplete means the peer moved on: the earlier
//! transfer ends at once (and resumes elsewhere). A second header for the same request is a
//! lie.

use crate::mesh::protocol::Command;
use crate::scheduler::RequestId;
use bytes::Bytes;
use std::collections::VecDeque;

/// Requests we cancelled on one link whose answers may still arrive (and are read and dropped).
pub const RECENTLY_CANCELLED: usize = 8;

/// Our request to the peer, and the sizes its answer may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub request: RequestId,
    /// The bytes the answer must carry when the origin tells us (the playlist's byte range,
    /// less what we hold).
    pub exact_size: Option<u64>,
    /// The most it may carry otherwise.
    pub max_size: u64,
}

/// What an incoming message means for our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The answer to `request` starts: `size` bytes follow.
    Started { request: RequestId, size: u64 },
    /// Bytes of the answer to `request`.
    Data { request: RequestId, bytes: Bytes },
    /// Every byte the header announced has arrived.
    Completed { request: RequestId },
    /// The peer does not have the segment.
    Absent { request: RequestId },
    /// The peer moved on before finishing `request`: that transfer ends now.
    Abandoned { request: RequestId },
    /// Part of an answer we no longer want, read and dropped.
    Dropped,
    /// The peer broke the protocol: close the link.
    Offence(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Receiving {
    request: RequestId,
    expected: u64,
    got: u64,
    /// An answer to a request of ours still wanted (else read and dropped).
    wanted: bool,
}

/// One link's downloads: the request outstanding, the answer arriving.
#[derive(Debug, Default)]
pub struct Inbound {
    asked: Option<Asked>,
    cancelled: VecDeque<RequestId>,
    receiving: Option<Receiving>,
}

impl Inbound {
    /// Whether no request of ours is outstanding.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.asked.is_none()
    }

    /// We sent `asked`. A request still outstanding (which the scheduler never leaves) counts
    /// as cancelled.
    pub fn ask(&mut self, asked: Asked) {
        if let Some(previous) = self.asked.take() {
            self.cancel(previous.request);
        }
        self.asked = Some(asked);
    }

    /// We cancelled `request`: what still comes of its answer is read and dropped.
    pub fn cancel(&mut self, request: RequestId) {
        if self.asked.is_some_and(|a| a.request == request) {
            self.asked = None;
        }
        if let Some(r) = &mut self.receiving
            && r.request == request
        {
            r.wanted = false;
        }
        if !self.cancelled.contains(&request) {
            self.cancelled.push_back(request);
            if self.cancelled.len() > RECENTLY_CANCELLED {
                self.cancelled.pop_front();
            }
        }
    }

    fn was_cancelled(&self, request_id: RequestId) -> bool {
        self.cancelled.contains(&request_id)
    }

    /// A command about a download (`segment data`, `sending completed`, `segment absent`);
    /// other commands give nothing.
    pub fn on_command(&mut self, command: &Command) -> Vec<Verdict> {
        match *command {
            Command::SegmentData {
                request_id, size, ..
            } => self.on_header(request_id, size),
            Command::SendingCompleted { request_id, .. } => vec![self.on_completed(request_id)],
            Command::SegmentAbsent { request_id, .. } => self.on_absent(request_id),
            _ => Vec::new(),
        }
    }

    fn on_header(&mut self, request_id: RequestId, size: u64) -> Vec<Verdict> {
        let mut out = Vec::new();
        if let Some(r) = self.receiving.take() {
            if request_id == r.request {
                return vec![Verdict::Offence(
                    "a second segment data header for one request",
                )];
            }
            if r.got == r.expected {
                return vec![Verdict::Offence("segment data before sending completed")];
            }
            if r.wanted {
                self.asked = None;
                out.push(Verdict::Abandoned { request: r.request });
            }
        }
        let asked = self.asked.filter(|a| request_id == a.request);
        match asked {
            Some(a) => {
                if size > a.max_size || a.exact_size.is_some_and(|exact| exact != size) {
                    out.push(Verdict::Offence(
                        "claimed size disagrees with what the origin says",
                    ));
                    return out;
                }
                self.receiving = Some(Receiving {
                    request: a.request,
                    expected: size,
                    got: 0,
                    wanted: true,
                });
                out.push(Verdict::Started {
                    request: a.request,
                    size,
                });
            }
            None if self.was_cancelled(request_id) => {
                self.receiving = Some(Receiving {
                    request: request_id,
                    expected: size,
                    got: 0,
                    wanted: false,
                });
            }
            None => out.push(Verdict::Offence("segment data for a request not made")),
        }
        out
    }

    /// A raw data message.
    pub fn on_data(&mut self, bytes: Bytes) -> Verdict {
        let Some(r) = &mut self.receiving else {
            return Verdict::Offence("data without segment data");
        };
        let len = bytes.len() as u64;
        if r.expected - r.got < len {
            return Verdict::Offence("more data than announced");
        }
        r.got += len;
        if !r.wanted {
            return Verdict::Dropped;
        }
        Verdict::Data {
            request: r.request,
            bytes,
        }
    }

    fn on_completed(&mut self, request_id: RequestId) -> Verdict {
        let Some(r) = self.receiving.take() else {
            if self.was_cancelled(request_id) {
                return Verdict::Dropped;
            }
            return Verdict::Offence("sending completed for no transfer");
        };
        if request_id != r.request {
            return Verdict::Offence("sending completed for another request");
        }
        if r.got != r.expected {
            return Verdict::Offence("sending completed before all the data");
        }
        if !r.wanted {
            return Verdict::Dropped;
        }
        self.asked = None;
        Verdict::Completed { request: r.request }
    }

    fn on_absent(&mut self, request_id: RequestId) -> Vec<Verdict> {
        let Some(asked) = self.asked.filter(|a| request_id == a.request) else {
            // Too late (cancelled), or nothing of ours: nothing to do.
            return Vec::new();
        };
        if self.receiving.is_some_and(|r| r.request == asked.request) {
            return vec![Verdict::Offence("segment absent during its own transfer")];
        }
        self.asked = None;
        vec![Verdict::Absent {
            request: asked.request,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(request: RequestId, exact_size: Option<u64>) -> Asked {
        Asked {
            request,
            exact_size,
            max_size: 1_000,
        }
    }

    fn header(request_id: i64, size: u64) -> Command {
        Command::SegmentData {
            id: 7,
            request_id,
            size,
        }
    }

    fn completed(request_id: i64) -> Command {
        Command::SendingCompleted { id: 7, request_id }
    }

    fn data(len: usize) -> Bytes {
        Bytes::from(vec![0xab; len])
    }

    #[test]
    fn an_answer_in_order_starts_carries_data_and_completes() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        assert!(!link.is_idle());
        assert_eq!(
            link.on_command(&header(3, 10)),
            vec![Verdict::Started {
                request: 3,
                size: 10
            }]
        );
        assert_eq!(
            link.on_data(data(4)),
            Verdict::Data {
                request: 3,
                bytes: data(4)
            }
        );
        assert_eq!(
            link.on_data(data(6)),
            Verdict::Data {
                request: 3,
                bytes: data(6)
            }
        );
        assert_eq!(
            link.on_command(&completed(3)),
            vec![Verdict::Completed { request: 3 }]
        );
        assert!(link.is_idle());
        // The same header again is not for a request outstanding.
        assert_eq!(
            link.on_command(&header(3, 10)),
            vec![Verdict::Offence("segment data for a request not made")]
        );
    }

    #[test]
    fn a_second_header_for_the_same_request_is_an_offence() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        link.on_data(data(4));
        assert_eq!(
            link.on_command(&header(3, 10)),
            vec![Verdict::Offence(
                "a second segment data header for one request"
            )]
        );
    }

    #[test]
    fn bytes_past_the_claimed_size_and_unsolicited_data_are_offences() {
        let mut link = Inbound::default();
        assert_eq!(
            link.on_data(data(1)),
            Verdict::Offence("data without segment data")
        );
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        link.on_data(data(9));
        assert_eq!(
            link.on_data(data(2)),
            Verdict::Offence("more data than announced")
        );
        let mut link = Inbound::default();
        assert_eq!(
            link.on_command(&header(99, 10)),
            vec![Verdict::Offence("segment data for a request not made")]
        );
        assert_eq!(
            link.on_command(&header(-1, 10)),
            vec![Verdict::Offence("segment data for a request not made")]
        );
    }

    #[test]
    fn claimed_sizes_are_checked_against_the_origin_and_the_bound() {
        let mut link = Inbound::default();
        link.ask(ask(3, Some(500)));
        assert_eq!(
            link.on_command(&header(3, 501)),
            vec![Verdict::Offence(
                "claimed size disagrees with what the origin says"
            )]
        );
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        assert_eq!(
            link.on_command(&header(3, 1_001)),
            vec![Verdict::Offence(
                "claimed size disagrees with what the origin says"
            )]
        );
        let mut link = Inbound::default();
        link.ask(ask(3, Some(500)));
        assert_eq!(
            link.on_command(&header(3, 500)),
            vec![Verdict::Started {
                request: 3,
                size: 500
            }]
        );
    }

    #[test]
    fn completed_before_all_the_data_or_for_another_request_is_an_offence() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        link.on_data(data(9));
        assert_eq!(
            link.on_command(&completed(3)),
            vec![Verdict::Offence("sending completed before all the data")]
        );
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 1));
        link.on_data(data(1));
        assert_eq!(
            link.on_command(&completed(4)),
            vec![Verdict::Offence("sending completed for another request")]
        );
        let mut link = Inbound::default();
        assert_eq!(
            link.on_command(&completed(4)),
            vec![Verdict::Offence("sending completed for no transfer")]
        );
    }

    #[test]
    fn the_answer_to_a_cancelled_request_is_read_and_dropped() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        link.on_data(data(4));
        link.cancel(3);
        assert!(link.is_idle());
        assert_eq!(link.on_data(data(6)), Verdict::Dropped);
        assert_eq!(link.on_command(&completed(3)), vec![Verdict::Dropped]);
        // Cancelled before its header arrived.
        link.ask(ask(4, None));
        link.cancel(4);
        link.ask(ask(5, None));
        assert!(link.on_command(&header(4, 2)).is_empty());
        assert_eq!(link.on_data(data(2)), Verdict::Dropped);
        assert_eq!(link.on_command(&completed(4)), vec![Verdict::Dropped]);
        assert_eq!(
            link.on_command(&header(5, 1)),
            vec![Verdict::Started {
                request: 5,
                size: 1
            }]
        );
        // Absent for a cancelled request: nothing.
        link.cancel(5);
        assert!(
            link.on_command(&Command::SegmentAbsent {
                id: 7,
                request_id: 5
            })
            .is_empty()
        );
    }

    #[test]
    fn a_header_for_another_request_while_one_is_incomplete_ends_the_earlier_one() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        link.on_data(data(4));
        // The peer moved on to a request we cancelled earlier, say: request 3 ends now.
        link.cancel(2);
        assert_eq!(
            link.on_command(&header(2, 5)),
            vec![Verdict::Abandoned { request: 3 }]
        );
        assert!(link.is_idle());
        // To one we never made: the earlier ends, and the new one is an offence.
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        link.on_command(&header(3, 10));
        assert_eq!(
            link.on_command(&header(9, 5)),
            vec![
                Verdict::Abandoned { request: 3 },
                Verdict::Offence("segment data for a request not made")
            ]
        );
    }

    #[test]
    fn absent_ends_the_request_unless_its_transfer_is_under_way() {
        let mut link = Inbound::default();
        link.ask(ask(3, None));
        let absent = Command::SegmentAbsent {
            id: 7,
            request_id: 3,
        };
        assert_eq!(
            link.on_command(&absent),
            vec![Verdict::Absent { request: 3 }]
        );
        assert!(link.is_idle());
        link.ask(ask(4, None));
        link.on_command(&header(4, 3));
        assert_eq!(
            link.on_command(&Command::SegmentAbsent {
                id: 7,
                request_id: 4
            }),
            vec![Verdict::Offence("segment absent during its own transfer")]
        );
    }

    #[test]
    fn cancelled_ids_are_bounded() {
        let mut link = Inbound::default();
        for request in 0..1_000 {
            link.ask(ask(request, None));
            link.cancel(request);
        }
        assert_eq!(link.cancelled.len(), RECENTLY_CANCELLED);
    }
}
