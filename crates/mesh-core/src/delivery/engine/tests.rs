//! The engine alone, in simulated time: each test plays the driver (and, where it says so, a
//! hostile peer), and every command between engines goes through the wire codec.

use super::*;
use crate::mesh::integrity::sha256;
use crate::mesh::protocol::{Decoder, data_chunks, encode};
use std::net::Ipv4Addr;

const SWARM: &str = "e93f02264a9448c5b150";
const PEER_A: &str = "-GM0001-AAAAAAAAAAAA";
const PEER_B: &str = "-GM0001-BBBBBBBBBBBB";
const HOSTILE: &str = "-GM0001-XXXXXXXXXXXX";
/// Three upload chunks and a bit.
const SEGMENT_LEN: usize = 3 * UPLOAD_CHUNK + 1000;

fn ms(ms: u64) -> Time {
    Duration::from_millis(ms)
}

fn swarm() -> InfoHash {
    InfoHash::parse(SWARM).unwrap()
}

fn peer_id(id: &str) -> PeerId {
    PeerId::parse(id).unwrap()
}

fn address(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

fn segment_bytes(segment: SegmentId) -> Bytes {
    (0..SEGMENT_LEN)
        .map(|i| (i as i64 * 7 + segment) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn url(segment: SegmentId) -> Url {
    Url::parse(&format!("http://cdn.test/seg{segment}.m4s")).unwrap()
}

/// A media segment of `swarm`, with its published hash, needed by `deadline`.
fn shared_in(swarm: InfoHash, segment: SegmentId, deadline: Time) -> SegmentRequest {
    SegmentRequest {
        resource: Resource {
            url: url(segment),
            range: None,
        },
        deadline: Some(deadline),
        retry_not_found: false,
        share: Some(Share {
            key: ShareKey { swarm, segment },
            from_peers: true,
            id_ambiguous: false,
            hash: Some(sha256(&segment_bytes(segment))),
        }),
    }
}

fn shared(segment: SegmentId, deadline: Time) -> SegmentRequest {
    shared_in(swarm(), segment, deadline)
}

fn config() -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig::default(),
        discovery: false,
        upload: true,
        max_upload_rate: 0,
        cache_size: 1 << 20,
    }
}

/// One engine and what it asked its driver to do, drained after every input.
struct Node {
    engine: Engine,
    now: Time,
    http: Vec<(RequestId, Url, u64)>,
    aborted: Vec<RequestId>,
    sent: Vec<(PeerRef, Command)>,
    uploads: Vec<(PeerRef, Option<Upload>)>,
    closed: Vec<PeerRef>,
    joins: Vec<InfoHash>,
    leaves: Vec<InfoHash>,
    delivered: Vec<(RequestId, Fetched)>,
    failed: Vec<RequestId>,
    warnings: Vec<MeshError>,
    wake: Option<Time>,
}

impl Node {
    fn new(config: EngineConfig) -> Node {
        Node {
            engine: Engine::new(config, Arc::new(Bans::new())),
            now: Duration::ZERO,
            http: Vec::new(),
            aborted: Vec::new(),
            sent: Vec::new(),
            uploads: Vec::new(),
            closed: Vec::new(),
            joins: Vec::new(),
            leaves: Vec::new(),
            delivered: Vec::new(),
            failed: Vec::new(),
            warnings: Vec::new(),
            wake: None,
        }
    }

    fn drain(&mut self) {
        loop {
            match self.engine.poll_output() {
                Output::Timeout(wake) => {
                    self.wake = wake;
                    return;
                }
                Output::StartHttp { id, resource, from } => {
                    self.http.push((id, resource.url, from))
                }
                Output::AbortHttp { id } => self.aborted.push(id),
                Output::Send { link, command } => self.sent.push((link, command)),
                Output::Upload { link, upload } => self.uploads.push((link, upload)),
                Output::CloseLink { link } => self.closed.push(link),
                Output::Join { swarm } => self.joins.push(swarm),
                Output::Leave { swarm } => self.leaves.push(swarm),
                Output::Delivered { id, fetched } => self.delivered.push((id, fetched)),
                Output::Failed { id, .. } => self.failed.push(id),
                Output::Warning(error) => self.warnings.push(error),
            }
        }
    }

    fn input(&mut self, input: Input) {
        self.engine.handle_input(self.now, input);
        self.drain();
    }

    /// Moves the clock to `at`, firing every timer due on the way.
    fn advance_to(&mut self, at: Time) {
        while let Some(wake) = self.wake.filter(|w| *w <= at) {
            self.now = self.now.max(wake);
            self.engine.handle_timeout(self.now);
            self.drain();
            if self.wake == Some(wake) {
                break;
            }
        }
        self.now = self.now.max(at);
        self.engine.handle_timeout(self.now);
        self.drain();
    }

    /// Answers every HTTP transfer started so far from the origin.
    fn answer_http(&mut self) {
        for (id, url, from) in std::mem::take(&mut self.http) {
            let segment: SegmentId = url.path()["/seg".len()..]
                .trim_end_matches(".m4s")
                .parse()
                .unwrap();
            let bytes = segment_bytes(segment).slice(from as usize..);
            self.input(Input::HttpFinished {
                id,
                from,
                result: Ok(Fetched {
                    bytes,
                    final_url: url,
                    elapsed: ms(50),
                }),
            });
        }
    }

    fn take_sent(&mut self) -> Vec<(PeerRef, Command)> {
        std::mem::take(&mut self.sent)
    }

    /// Fetches `segment` from the CDN (needed at once), so that it is held to serve peers.
    fn load_from_cdn(&mut self, id: RequestId, segment: SegmentId) {
        self.input(Input::Submit {
            id,
            request: shared(segment, self.now),
        });
        assert_eq!(self.http.len(), 1, "an urgent segment goes to the CDN");
        self.answer_http();
        let (got, fetched) = self.delivered.pop().unwrap();
        assert_eq!(got, id);
        assert_eq!(fetched.bytes, segment_bytes(segment));
    }

    fn link_up(&mut self, link: PeerRef, remote: &str, last_octet: u8) {
        self.input(Input::LinkUp {
            link,
            swarm: swarm(),
            remote: peer_id(remote),
            address: address(last_octet),
        });
    }
}

/// Passes a command through the wire codec, as a data channel would.
fn over_the_wire(command: &Command) -> Incoming {
    let mut decoder = Decoder::new();
    let mut decoded = None;
    for part in encode(command) {
        decoded = decoder.push(Bytes::from(part)).unwrap();
    }
    decoded.expect("a whole command")
}

/// Delivers every command `from` sent on `link` to `to`, which knows the link as `to_link`.
fn relay(from: &mut Node, to: &mut Node, to_link: PeerRef) {
    for (_, command) in from.take_sent() {
        to.input(Input::Message {
            link: to_link,
            message: over_the_wire(&command),
        });
    }
}

/// Carries out `uploader`'s upload orders as a link writer does: the header, the data in
/// chunks, `sending completed`, each step reported back.
fn carry_uploads(uploader: &mut Node, receiver: &mut Node, receiver_link: PeerRef) -> u64 {
    let mut sent = 0;
    for (link, upload) in std::mem::take(&mut uploader.uploads) {
        let Some(upload) = upload else { continue };
        let header = Command::SegmentData {
            id: upload.segment,
            request_id: upload.request_id,
            size: upload.data.len() as u64,
        };
        receiver.input(Input::Message {
            link: receiver_link,
            message: over_the_wire(&header),
        });
        for chunk in data_chunks(&upload.data) {
            sent += chunk.len() as u64;
            receiver.input(Input::Message {
                link: receiver_link,
                message: Incoming::Data(chunk),
            });
            uploader.input(Input::UploadProgress {
                link,
                request_id: upload.request_id,
            });
        }
        receiver.input(Input::Message {
            link: receiver_link,
            message: over_the_wire(&Command::SendingCompleted {
                id: upload.segment,
                request_id: upload.request_id,
            }),
        });
        uploader.input(Input::UploadDone {
            link,
            request_id: upload.request_id,
        });
        uploader.input(Input::Uploaded { bytes: sent });
    }
    sent
}

/// A holds segment 7; B joins the swarm (by loading segment 6) and links with A. Both know
/// the link as 1.
fn linked_pair() -> (Node, Node) {
    let mut a = Node::new(config());
    let mut b = Node::new(config());
    a.load_from_cdn(1, 7);
    b.load_from_cdn(1, 6);
    a.link_up(1, PEER_B, 2);
    b.link_up(1, PEER_A, 1);
    assert!(a.closed.is_empty() && b.closed.is_empty());
    // Each side announces what it holds as the link comes up.
    assert_eq!(
        a.sent,
        vec![(
            1,
            Command::SegmentsAnnouncement {
                loaded: vec![7],
                loading: vec![]
            }
        )]
    );
    relay(&mut a, &mut b, 1);
    relay(&mut b, &mut a, 1);
    (a, b)
}

#[test]
fn a_cdn_answer_is_delivered_exactly_and_counted() {
    let mut node = Node::new(config());
    node.input(Input::Submit {
        id: 5,
        request: shared(3, ms(0)),
    });
    assert_eq!(node.joins, vec![swarm()]);
    assert_eq!(node.http, vec![(5, url(3), 0)]);
    node.answer_http();
    assert_eq!(node.delivered.len(), 1);
    assert_eq!(node.delivered[0].1.bytes, segment_bytes(3));
    let stats = node.engine.stats();
    assert_eq!(stats.bytes_cdn, SEGMENT_LEN as u64);
    assert_eq!((stats.segments_cdn, stats.segments_p2p), (1, 0));
    assert_eq!(node.engine.cached_bytes(), SEGMENT_LEN);
    assert_eq!(node.engine.pending_requests(), 0);
}

#[test]
fn a_segment_travels_between_two_engines_byte_exact() {
    let (mut a, mut b) = linked_pair();
    // Time to spare: B asks its peer.
    b.input(Input::Submit {
        id: 2,
        request: shared(7, b.now + Duration::from_secs(20)),
    });
    assert!(b.http.is_empty(), "nothing from the CDN: {:?}", b.http);
    let requests = b.take_sent();
    assert_eq!(
        requests,
        vec![(
            1,
            Command::SegmentRequest {
                id: 7,
                request_id: 2,
                byte_from: None
            }
        )]
    );
    for (_, command) in requests {
        a.input(Input::Message {
            link: 1,
            message: over_the_wire(&command),
        });
    }
    assert_eq!(a.uploads.len(), 1);
    let sent = carry_uploads(&mut a, &mut b, 1);
    assert_eq!(sent, SEGMENT_LEN as u64);
    let (id, fetched) = b.delivered.pop().unwrap();
    assert_eq!(id, 2);
    assert_eq!(fetched.bytes, segment_bytes(7));
    let (sa, sb) = (a.engine.stats(), b.engine.stats());
    assert_eq!((sb.segments_p2p, sb.bytes_p2p), (1, SEGMENT_LEN as u64));
    assert_eq!(sb.bytes_cdn, SEGMENT_LEN as u64, "only segment 6");
    assert_eq!(sa.bytes_uploaded, SEGMENT_LEN as u64);
    assert_eq!((sa.peers, sb.peers), (1, 1));
    // B now serves it too, and says so.
    let announced: Vec<Command> = b.take_sent().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        announced.last(),
        Some(&Command::SegmentsAnnouncement {
            loaded: vec![6, 7],
            loading: vec![]
        })
    );
}

#[test]
fn a_cancelled_peer_transfer_tells_the_peer_which_segment() {
    let (_a, mut b) = linked_pair();
    b.input(Input::Submit {
        id: 2,
        request: shared(7, b.now + Duration::from_secs(20)),
    });
    assert_eq!(b.take_sent().len(), 1, "the request to A");
    b.input(Input::Cancel { id: 2 });
    assert_eq!(
        b.take_sent(),
        vec![(
            1,
            Command::Cancel {
                id: 7,
                request_id: 2
            }
        )]
    );
    assert_eq!(b.engine.pending_requests(), 0);
    assert!(b.http.is_empty() && b.delivered.is_empty());
}

#[test]
fn data_that_fails_its_hash_bans_the_sender_and_the_cdn_serves() {
    let mut b = Node::new(config());
    b.load_from_cdn(1, 6);
    b.link_up(1, HOSTILE, 9);
    b.input(Input::Message {
        link: 1,
        message: over_the_wire(&Command::SegmentsAnnouncement {
            loaded: vec![7],
            loading: vec![],
        }),
    });
    b.take_sent();
    b.input(Input::Submit {
        id: 2,
        request: shared(7, b.now + Duration::from_secs(20)),
    });
    assert_eq!(b.take_sent().len(), 1, "the request to the hostile peer");
    // The right size, the wrong bytes.
    let mut forged = segment_bytes(7).to_vec();
    forged[100] ^= 0xff;
    let forged = Bytes::from(forged);
    b.input(Input::Message {
        link: 1,
        message: over_the_wire(&Command::SegmentData {
            id: 7,
            request_id: 2,
            size: forged.len() as u64,
        }),
    });
    for chunk in data_chunks(&forged) {
        b.input(Input::Message {
            link: 1,
            message: Incoming::Data(chunk),
        });
    }
    b.input(Input::Message {
        link: 1,
        message: over_the_wire(&Command::SendingCompleted {
            id: 7,
            request_id: 2,
        }),
    });
    assert_eq!(b.closed, vec![1]);
    let stats = b.engine.stats();
    assert_eq!((stats.segments_rejected, stats.peers_banned), (1, 1));
    assert_eq!(stats.peers, 0);
    // With no peer left, the CDN serves the segment, exact.
    b.advance_to(b.now + Duration::from_secs(1));
    assert_eq!(b.http, vec![(2, url(7), 0)]);
    b.answer_http();
    let (id, fetched) = b.delivered.pop().unwrap();
    assert_eq!((id, fetched.bytes), (2, segment_bytes(7)));
    assert_eq!(b.engine.stats().bytes_p2p, 0);
    // The banned peer cannot link again, under its id or from its address.
    b.link_up(2, HOSTILE, 9);
    b.link_up(3, "-GM0001-YYYYYYYYYYYY", 9);
    assert_eq!(b.closed, vec![1, 2, 3]);
    assert_eq!(b.engine.stats().peers, 0);
}

#[test]
fn a_second_offence_of_a_peer_bans_it() {
    let mut b = Node::new(config());
    b.load_from_cdn(1, 6);
    let too_long = Command::SegmentsAnnouncement {
        loaded: (0..=MAX_ANNOUNCED_IDS as SegmentId).collect(),
        loading: vec![],
    };
    b.link_up(1, HOSTILE, 9);
    b.input(Input::Message {
        link: 1,
        message: Incoming::Command(too_long.clone()),
    });
    assert_eq!(b.closed, vec![1]);
    assert_eq!(
        b.engine.stats().peers_banned,
        0,
        "one offence closes the link only"
    );
    b.link_up(2, HOSTILE, 9);
    assert_eq!(b.closed, vec![1], "not banned: it may link again");
    b.input(Input::Malformed {
        link: 2,
        reason: "commands beyond the link's budget".into(),
    });
    assert_eq!(b.closed, vec![1, 2]);
    assert_eq!(b.engine.stats().peers_banned, 1);
    b.link_up(3, HOSTILE, 9);
    assert_eq!(b.closed, vec![1, 2, 3]);
}

#[test]
fn a_stalled_link_is_dropped_without_blame() {
    let (mut a, _b) = linked_pair();
    a.input(Input::LinkStalled { link: 1 });
    assert_eq!(a.closed, vec![1]);
    let stats = a.engine.stats();
    assert_eq!((stats.peers, stats.peers_banned), (0, 0));
    a.link_up(2, PEER_B, 2);
    assert_eq!(a.closed, vec![1]);
    assert_eq!(a.engine.stats().peers, 1);
}

#[test]
fn links_in_swarms_not_joined_are_refused() {
    let mut a = Node::new(config());
    a.link_up(1, PEER_B, 2);
    assert_eq!(a.closed, vec![1]);
    assert_eq!(a.engine.stats().peers, 0);
}

#[test]
fn swarms_beyond_the_limit_leave_the_least_recently_used() {
    let mut node = Node::new(config());
    let swarms: Vec<InfoHash> = (0..=MAX_JOINED_SWARMS)
        .map(|i| InfoHash::parse(&format!("{i:020}")).unwrap())
        .collect();
    for (i, swarm) in swarms.iter().enumerate() {
        node.input(Input::Submit {
            id: i as RequestId + 1,
            request: shared_in(swarm.clone(), 1, node.now),
        });
    }
    assert_eq!(node.joins, swarms);
    assert_eq!(node.leaves, vec![swarms[0].clone()]);
    // A link into the swarm left is refused; one into a joined swarm is taken.
    node.input(Input::LinkUp {
        link: 1,
        swarm: swarms[0].clone(),
        remote: peer_id(PEER_B),
        address: address(2),
    });
    node.input(Input::LinkUp {
        link: 2,
        swarm: swarms[1].clone(),
        remote: peer_id(PEER_B),
        address: address(2),
    });
    assert_eq!(node.closed, vec![1]);
    assert_eq!(node.engine.stats().peers, 1);
}

#[test]
fn an_upload_that_stops_moving_is_cut_at_its_send_deadline() {
    let (mut a, _b) = linked_pair();
    let asked = a.now;
    a.input(Input::Message {
        link: 1,
        message: over_the_wire(&Command::SegmentRequest {
            id: 7,
            request_id: 40,
            byte_from: Some(1000),
        }),
    });
    let (link, upload) = a.uploads.pop().unwrap();
    let upload = upload.unwrap();
    assert_eq!(link, 1);
    assert_eq!((upload.request_id, upload.segment), (40, 7));
    assert_eq!(upload.data, segment_bytes(7).slice(1000..));
    // The writer never reports progress.
    assert_eq!(a.wake, Some(asked + UPLOAD_SEND_DEADLINE));
    a.advance_to(asked + UPLOAD_SEND_DEADLINE - ms(1));
    assert!(a.closed.is_empty());
    a.advance_to(asked + UPLOAD_SEND_DEADLINE + ms(1));
    assert_eq!(a.closed, vec![1]);
    assert_eq!(a.engine.stats().peers_banned, 0, "a first offence");
}

#[test]
fn a_withdrawn_segment_is_neither_announced_nor_served() {
    let (mut a, _b) = linked_pair();
    a.input(Input::Withdraw {
        key: ShareKey {
            swarm: swarm(),
            segment: 7,
        },
    });
    assert_eq!(
        a.take_sent(),
        vec![(
            1,
            Command::SegmentsAnnouncement {
                loaded: vec![],
                loading: vec![]
            }
        )]
    );
    a.input(Input::Message {
        link: 1,
        message: over_the_wire(&Command::SegmentRequest {
            id: 7,
            request_id: 41,
            byte_from: None,
        }),
    });
    assert_eq!(
        a.take_sent(),
        vec![(
            1,
            Command::SegmentAbsent {
                id: 7,
                request_id: 41
            }
        )]
    );
    assert!(
        a.uploads.iter().all(|(_, upload)| upload.is_none()),
        "nothing uploaded"
    );
    // Loading it again from the CDN does not make it served: the id is withdrawn for good.
    a.load_from_cdn(2, 7);
    assert_eq!(a.engine.cached_bytes(), 0);
}

#[test]
fn a_cancelled_request_is_forgotten_and_its_transfer_stopped() {
    let mut node = Node::new(config());
    node.input(Input::Submit {
        id: 9,
        request: shared(3, ms(0)),
    });
    assert_eq!(node.http.len(), 1);
    node.input(Input::Cancel { id: 9 });
    assert_eq!(node.aborted, vec![9]);
    assert_eq!(node.engine.pending_requests(), 0);
    // A late answer for it delivers nothing.
    node.answer_http();
    assert!(node.delivered.is_empty() && node.failed.is_empty());
}

#[test]
fn warnings_of_one_kind_are_held_back_within_the_window() {
    let mut node = Node::new(config());
    for _ in 0..3 {
        node.input(Input::Warning {
            kind: "tracker".into(),
            error: MeshError::Mesh("tracker down".into()),
        });
    }
    assert_eq!(node.warnings.len(), 1);
    node.now += WARNING_WINDOW;
    node.input(Input::Warning {
        kind: "tracker".into(),
        error: MeshError::Mesh("tracker down".into()),
    });
    assert_eq!(node.warnings.len(), 2);
    assert_eq!(
        node.warnings[1].to_string(),
        MeshError::Mesh(format!(
            "tracker down (2 more like it in the last {WARNING_WINDOW:?} not shown)"
        ))
        .to_string()
    );
}
