// The browser peer of tests/browser.rs: hls.js 1.7 + p2p-media-loader 2.3 (HlsJsP2PEngine),
// instrumented. driver.mjs opens it with these query parameters:
//   src=URL      the manifest to play
//   label=STR    name in reports
//   core=JSON    p2p-media-loader core config (announceTrackers, swarmId, highDemandTimeWindow, ...)
//   hls=JSON     hls.js config
// Everything it observes is kept in window.__stats and window.__wire; the driver reads them
// at the end of the run.
const q = new URLSearchParams(location.search);
const label = q.get("label") ?? "browser";
const now = () => Math.round(performance.now());

// ---- Data-channel tap --------------------------------------------------------------------
// Every message p2p-media-loader writes to (tx) or reads from (rx) an RTCDataChannel.
// A message is a command when it starts with "cstr"/"dstr" and ends with "cend"/"dend"
// (p2p-media-loader's own test, isCommandChunk); commands are kept whole, in hex, for the
// driver to decode with p2p-media-loader's deserializer. Segment data (raw messages) is
// only counted: consecutive raw messages of one channel and direction are folded into one
// entry, so the log keeps the order of commands and data.
const MAX_WIRE_ENTRIES = 50000;
const wire = { entries: [], dropped: 0, channels: [] };
window.__wire = wire;
const channelIds = new WeakMap();
function channelId(ch) {
  let id = channelIds.get(ch);
  if (id === undefined) {
    id = wire.channels.length;
    channelIds.set(ch, id);
    wire.channels.push({ id, label: ch.label, ordered: ch.ordered, protocol: ch.protocol, negotiated: ch.negotiated, t: now() });
  }
  return id;
}
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const frame = (u8, at) => String.fromCharCode(u8[at], u8[at + 1], u8[at + 2], u8[at + 3]);
function asBytes(d) {
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  if (ArrayBuffer.isView(d)) return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  return null;
}
function tap(ch, dir, data) {
  try {
    const id = channelId(ch);
    const u8 = asBytes(data);
    if (!u8) {
      wire.entries.push({ t: now(), ch: id, dir, other: typeof data });
      return;
    }
    const isCommand = u8.length >= 8 && ["cstr", "dstr"].includes(frame(u8, 0)) && ["cend", "dend"].includes(frame(u8, u8.length - 4));
    if (isCommand) {
      if (wire.entries.length >= MAX_WIRE_ENTRIES) { wire.dropped++; return; }
      wire.entries.push({ t: now(), ch: id, dir, hex: hex(u8) });
    } else {
      const last = wire.entries[wire.entries.length - 1];
      if (last && last.raw !== undefined && last.ch === id && last.dir === dir) {
        last.raw++; last.bytes += u8.length;
      } else if (wire.entries.length < MAX_WIRE_ENTRIES) {
        wire.entries.push({ t: now(), ch: id, dir, raw: 1, bytes: u8.length });
      } else wire.dropped++;
    }
  } catch (e) {
    wire.tapError = String(e);
  }
}
const origSend = RTCDataChannel.prototype.send;
RTCDataChannel.prototype.send = function (d) {
  tap(this, "tx", d);
  return origSend.call(this, d);
};
// simple-peer (inside p2p-media-loader-core) reads with `channel.onmessage = ...`.
const onmessage = Object.getOwnPropertyDescriptor(RTCDataChannel.prototype, "onmessage");
Object.defineProperty(RTCDataChannel.prototype, "onmessage", {
  configurable: true,
  enumerable: onmessage.enumerable,
  get() { return onmessage.get.call(this); },
  set(fn) {
    const ch = this;
    onmessage.set.call(this, typeof fn === "function" ? function (ev) { tap(ch, "rx", ev.data); return fn.call(this, ev); } : fn);
  },
});

// ---- Player ------------------------------------------------------------------------------
const { default: Hls } = await import("hls.js");
const { HlsJsP2PEngine } = await import("p2p-media-loader-hlsjs");

const path = (url) => { try { const u = new URL(url, location.href); return u.pathname + u.search; } catch { return String(url); } };
const stats = {
  label, started: Date.now(), timeOrigin: performance.timeOrigin,
  bytes: { http: 0, p2p: 0 }, uploadedBytes: 0,
  byPeer: {},                 // peerId -> { down, up } bytes (onChunkDownloaded / onChunkUploaded)
  loaded: [],                 // onSegmentLoaded: { url, source, bytes, peerId }
  starts: [],                 // onSegmentStart: { url, externalId, source, peerId }
  errors: [], aborts: 0,
  validated: [],              // every segment received over P2P: { url, bytes, sha256 }
  peerEvents: [], trackerWarnings: [], trackerErrors: [], hlsErrors: [],
  levelUpdated: null, playback: {},
};
window.__stats = stats;

async function sha256(data) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return hex(d);
}

const core = {
  rtcConfig: { iceServers: [] }, // loopback host candidates only
  ...JSON.parse(q.get("core") ?? "{}"),
  // Called by p2p-media-loader for every segment downloaded from a peer, before it is used.
  // It records the segment's SHA-256 and accepts it: the test compares the hashes with the
  // origin's. (A site would return whether it matches the origin's segments-sha256.json.)
  async validateP2PSegment(url, byteRange, data) {
    stats.validated.push({ url: path(url), byteRange: byteRange ?? null, bytes: data.byteLength, sha256: await sha256(data), t: now() });
    return true;
  },
};
const hlsConfig = JSON.parse(q.get("hls") ?? "{}");

const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
const hls = new HlsWithP2P({
  ...hlsConfig,
  p2p: {
    core,
    onHlsJsCreated(h) {
      const e = h.p2pEngine;
      e.addEventListener("onSegmentLoaded", (d) => stats.loaded.push({ url: path(d.segmentUrl), source: d.downloadSource, bytes: d.bytesLength, peerId: d.peerId ?? null, t: now() }));
      e.addEventListener("onSegmentStart", (d) => stats.starts.push({ url: path(d.segment.url), externalId: d.segment.externalId, source: d.downloadSource, peerId: d.peerId ?? null, t: now() }));
      e.addEventListener("onSegmentError", (d) => stats.errors.push({ url: path(d.segment.url), externalId: d.segment.externalId, error: d.error?.type, source: d.downloadSource, peerId: d.peerId ?? null, t: now() }));
      e.addEventListener("onSegmentAbort", () => { stats.aborts++; });
      e.addEventListener("onChunkDownloaded", (n, source, peerId) => {
        stats.bytes[source] += n;
        if (source === "p2p") (stats.byPeer[peerId] ??= { down: 0, up: 0 }).down += n;
      });
      e.addEventListener("onChunkUploaded", (n, peerId) => {
        stats.uploadedBytes += n;
        (stats.byPeer[peerId] ??= { down: 0, up: 0 }).up += n;
      });
      e.addEventListener("onPeerConnect", (d) => stats.peerEvents.push({ type: "connect", peerId: d.peerId, streamType: d.streamType, t: now() }));
      e.addEventListener("onPeerClose", (d) => stats.peerEvents.push({ type: "close", peerId: d.peerId, streamType: d.streamType, t: now() }));
      e.addEventListener("onPeerError", (d) => stats.peerEvents.push({ type: "error", peerId: d.peerId, error: String(d.error), t: now() }));
      e.addEventListener("onTrackerWarning", (d) => stats.trackerWarnings.push(String(d.warning)));
      e.addEventListener("onTrackerError", (d) => stats.trackerErrors.push(String(d.error)));
    },
  },
});
window.__hls = hls;
hls.on(Hls.Events.LEVEL_UPDATED, (_, d) => {
  stats.levelUpdated = { live: d.details.live, startSN: d.details.startSN, endSN: d.details.endSN, fragments: d.details.fragments.length,
    liveSyncDurationCount: hls.config.liveSyncDurationCount, maxBufferLength: hls.config.maxBufferLength };
});
hls.on(Hls.Events.ERROR, (_, d) => stats.hlsErrors.push({ type: d.type, details: d.details, fatal: d.fatal, t: now() }));

const video = document.getElementById("video");
hls.attachMedia(video);
hls.loadSource(q.get("src"));
video.play().catch(() => {});
setInterval(() => {
  stats.playback = { currentTime: video.currentTime, paused: video.paused, ended: video.ended, readyState: video.readyState,
    latency: hls.latency ?? null, liveSyncPosition: hls.liveSyncPosition ?? null };
  document.getElementById("status").textContent = JSON.stringify({ bytes: stats.bytes, playback: stats.playback });
}, 500);
stats.ready = { core: { ...core, validateP2PSegment: "(recorder)" }, hls: hlsConfig, ua: navigator.userAgent };
