//! Our tracker client against real WebTorrent trackers on 127.0.0.1: the bundled
//! `mesh-tracker`, bittorrent-tracker and aquatic_ws (the last two from
//! `scripts/setup-deps.sh`). Two `TrackerClient`s, each on its own WebSocket, go through a full
//! offer → answer exchange with fake SDPs (no WebRTC); the offer_id and both SDPs must arrive
//! exactly as sent.

mod common;

use common::trackers::{TrackerKind, TrackerProcess};
use futures::{SinkExt, StreamExt};
use gstmesh::mesh::swarm::{InfoHash, PeerId};
use gstmesh::mesh::tracker::{
    LocalOffer, RemoteSdp, TrackerClient, TrackerConfig, TrackerInput, TrackerOutput,
};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The whole exchange must finish within this long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

const SWARM: &str = "e93f02264a9448c5b150";

const SDP_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:fAkE\r\na=ice-pwd:fakefakefakefakefakefake\r\na=fingerprint:sha-256 00:11:22\r\n\
a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";

const SDP_ANSWER: &str = "v=0\r\no=- 1234567890 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:AnSw\r\na=ice-pwd:answeransweransweranswer\r\na=setup:active\r\na=mid:0\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 50001 typ host\r\n";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A tracker client and its WebSocket.
struct Peer {
    name: &'static str,
    client: TrackerClient,
    ws: Ws,
    start: Instant,
}

impl Peer {
    async fn connect(name: &'static str, url: &str) -> Peer {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{name}: connect to {url}: {e}"));
        let config = TrackerConfig {
            offers_per_announce: 1,
            reconnect_jitter: false,
            ..TrackerConfig::default()
        };
        Peer {
            name,
            client: TrackerClient::new(config),
            ws,
            start: Instant::now(),
        }
    }

    /// Feeds the client an input, sends what it says to send, and returns the rest.
    async fn handle(&mut self, input: TrackerInput) -> Vec<TrackerOutput> {
        let outputs = self.client.handle(self.start.elapsed(), input);
        let mut rest = Vec::new();
        for output in outputs {
            match output {
                TrackerOutput::Send(text) => self
                    .ws
                    .send(Message::text(text))
                    .await
                    .unwrap_or_else(|e| panic!("{}: send: {e}", self.name)),
                TrackerOutput::Warning { text, .. } => panic!("{}: warning: {text}", self.name),
                other => rest.push(other),
            }
        }
        rest
    }

    /// Reads tracker frames into the client until an output is picked.
    async fn until<T>(&mut self, mut pick: impl FnMut(&TrackerOutput) -> Option<T>) -> T {
        loop {
            let frame = self.ws.next().await;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Close(close))) => {
                    panic!(
                        "{}: the tracker closed the connection: {close:?}",
                        self.name
                    )
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{}: receive: {e}", self.name),
                None => panic!("{}: the connection ended", self.name),
            };
            let outputs = self.handle(TrackerInput::Message(text)).await;
            if let Some(picked) = outputs.iter().find_map(&mut pick) {
                return picked;
            }
        }
    }

    /// Joins the swarm and announces `offers` (none for the answering side); returns the
    /// offer ids and the tracker's `incomplete` count.
    async fn join(&mut self, info_hash: &InfoHash, sdp: Option<&str>) -> (Vec<LocalOffer>, u64) {
        assert!(
            self.handle(TrackerInput::Join(info_hash.clone()))
                .await
                .is_empty()
        );
        let outputs = self.handle(TrackerInput::Connected).await;
        let [TrackerOutput::NeedOffers { offer_ids, .. }] = &outputs[..] else {
            panic!("{}: expected NeedOffers, got {outputs:?}", self.name)
        };
        let offers: Vec<LocalOffer> = match sdp {
            Some(sdp) => offer_ids
                .iter()
                .map(|id| LocalOffer {
                    offer_id: id.clone(),
                    sdp: sdp.to_string(),
                })
                .collect(),
            None => Vec::new(),
        };
        let outputs = self
            .handle(TrackerInput::OffersReady {
                info_hash: info_hash.clone(),
                offers: offers.clone(),
            })
            .await;
        assert!(outputs.is_empty(), "{}: {outputs:?}", self.name);
        let incomplete = self
            .until(|o| match o {
                TrackerOutput::SwarmStats { incomplete, .. } => Some(*incomplete),
                _ => None,
            })
            .await;
        (offers, incomplete.expect("incomplete count"))
    }

    /// Waits for the offer or answer the tracker relays to this peer in `info_hash`.
    async fn relayed(&mut self, info_hash: &InfoHash, kind: Relayed) -> RemoteSdp {
        self.until(|o| match (o, kind) {
            (
                TrackerOutput::RemoteOffer {
                    info_hash: h,
                    remote,
                },
                Relayed::Offer,
            )
            | (
                TrackerOutput::RemoteAnswer {
                    info_hash: h,
                    remote,
                },
                Relayed::Answer,
            ) if h == info_hash => Some(remote.clone()),
            _ => None,
        })
        .await
    }

    fn peer_id(&self) -> PeerId {
        self.client.peer_id().clone()
    }
}

#[derive(Debug, Clone, Copy)]
enum Relayed {
    Offer,
    Answer,
}

/// A offers, B answers, through the tracker at `url`.
async fn offer_answer_exchange(url: &str) {
    let info_hash = InfoHash::parse(SWARM).unwrap();
    let mut a = Peer::connect("A", url).await;
    let mut b = Peer::connect("B", url).await;

    // B joins first, without offers, so that A's offer has somewhere to go.
    let (_, incomplete) = b.join(&info_hash, None).await;
    assert_eq!(incomplete, 1, "B alone in the swarm");
    let (offers, incomplete) = a.join(&info_hash, Some(SDP_OFFER)).await;
    assert_eq!(incomplete, 2, "A and B in the swarm");
    assert_eq!(offers.len(), 1);
    let offer_id = offers[0].offer_id.clone();

    let offer = b.relayed(&info_hash, Relayed::Offer).await;
    assert_eq!(
        offer,
        RemoteSdp {
            peer_id: a.peer_id(),
            offer_id: offer_id.clone(),
            sdp: SDP_OFFER.to_string(),
        }
    );

    let outputs = b
        .handle(TrackerInput::AnswerReady {
            info_hash: info_hash.clone(),
            to_peer_id: offer.peer_id.clone(),
            offer_id: offer.offer_id.clone(),
            sdp: SDP_ANSWER.to_string(),
        })
        .await;
    assert!(outputs.is_empty(), "{outputs:?}");

    let answer = a.relayed(&info_hash, Relayed::Answer).await;
    assert_eq!(
        answer,
        RemoteSdp {
            peer_id: b.peer_id(),
            offer_id,
            sdp: SDP_ANSWER.to_string(),
        }
    );

    for peer in [&mut a, &mut b] {
        let _ = peer.ws.close(None).await;
    }
}

fn exchange_through(kind: TrackerKind) {
    let tracker = TrackerProcess::start(kind);
    let url = tracker.url.clone();
    let result = block_on(async {
        tokio::time::timeout(EXCHANGE_TIMEOUT, offer_answer_exchange(&url)).await
    });
    if result.is_err() {
        panic!(
            "{kind:?}: the exchange did not finish within {EXCHANGE_TIMEOUT:?}; tracker stderr:\n{}",
            tracker.stderr_tail()
        );
    }
}

#[test]
fn bundled_tracker_relays_offer_and_answer() {
    exchange_through(TrackerKind::Bundled);
}

#[test]
fn bittorrent_tracker_relays_offer_and_answer() {
    exchange_through(TrackerKind::BittorrentTracker);
}

#[test]
fn aquatic_ws_relays_offer_and_answer() {
    exchange_through(TrackerKind::AquaticWs);
}

/// After `stop`, the tracker is gone: connecting fails.
#[test]
fn stopped_tracker_refuses_connections() {
    let mut tracker = TrackerProcess::start(TrackerKind::Bundled);
    assert!(tracker.is_running());
    let url = tracker.url.clone();
    tracker.stop();
    assert!(!tracker.is_running());
    let result = block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
    });
    assert!(
        matches!(result, Ok(Err(_))),
        "connecting after stop should fail at once"
    );
}
