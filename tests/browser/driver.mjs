// Runs one scenario of tests/browser.rs: headless Chromium peers (hls.js + p2p-media-loader 2.3,
// tests/browser/page.mjs) and meshsrc viewers (gst-launch-1.0) on one stream, through a real
// WebTorrent tracker, and prints ONE JSON result on stdout.
//
//   node tests/browser/driver.mjs SPEC.json
//
// It must run in a network namespace that has only `lo` (tests/browser.rs starts it under
// `unshare --net --pid --fork --mount-proc --kill-child`): Chromium then has nothing but
// loopback to offer, and every process started here dies with the namespace.
//
// SPEC (JSON, written by the Rust test):
//   root          project root (for .tools/browser, scripts/bittorrent-tracker.mjs)
//   media         directory with playlist.m3u8 and the segments it lists (the VOD source)
//   out           directory for outputs (meshsrc outputs and logs, result files)
//   pluginDir     directory holding libgstmesh.so (GST_PLUGIN_PATH)
//   meshTracker   path of the mesh-tracker binary
//   timeoutSeconds  hard limit of the whole run
//   lanes: [{     independent scenarios run at the same time (own stream path, own tracker)
//     name, tracker: "bundled" | "bittorrent-tracker",
//     stream: { type: "live", window, startSegments, endAfter, segmentSeconds }
//           | { type: "vod", mediaSequence },
//     first: "browser" | "meshsrc", joinAfterSeconds,
//     swarmId: null | "id"          (set on both sides when not null)
//     core: {...}, hls: {...}       p2p-media-loader core / hls.js config of the page
//     meshsrcProperties: ["live-delay=...", ...]
//     meshsrcPaceMicros             optional: write meshsrc's output at one buffer per this long
//     meshsrcFromMirror             optional: meshsrc plays the stream from another URL
//                                   (/<lane>/mirror-<type>/, the same playlist and segments)
//     laneSeconds                   the lane ends when meshsrc exits or after this long
//   }]
//
// Per lane the result has: the tracker's view (a logging WebSocket proxy in front of the
// tracker sees every announce, offer and answer), meshsrc's exit status, last mesh-statistics
// and output file, the page's p2p-media-loader events, the SHA-256 of every segment the page
// got over P2P, and the page's data-channel traffic decoded with p2p-media-loader's own
// deserializer, with the count of requests that arrived on a link while an earlier request
// on that link was still outstanding (pipelined requests).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const ROOT = spec.root ?? path.resolve(here, "../..");
const MODULES = path.join(ROOT, ".tools/browser/node_modules");
const CHROMIUM = spec.chromium ?? "/usr/bin/chromium";
const t0 = Date.now();
const elapsed = () => Date.now() - t0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`[driver ${(elapsed() / 1000).toFixed(1)}s]`, ...a);

// ---- refuse to run outside an lo-only namespace ---------------------------------------------
const ifaces = Object.keys(os.networkInterfaces());
if (ifaces.some((n) => n !== "lo") || !ifaces.includes("lo")) {
  console.log(JSON.stringify({ ok: false, error: `network interfaces ${ifaces.join(",") || "(none)"}: run in a namespace with only lo up` }));
  process.exit(3);
}

const modUrl = (rel) => pathToFileURL(path.join(MODULES, rel)).href;
const { chromium } = await import(modUrl("playwright-core/index.mjs"));
const { WebSocketServer, WebSocket } = await import(modUrl("ws/wrapper.mjs"));
const { deserializeCommand, BinaryCommandChunksJoiner } = await import(modUrl("p2p-media-loader-core/lib/p2p/commands/binary-command-creator.js"));

// ---- cleanup: every child and browser is ended here (the namespace is the backstop) ---------
const children = new Set();
const browsers = new Set();
const tmpDirs = [];
let closing = false;
async function cleanup() {
  if (closing) return;
  closing = true;
  for (const c of children) { try { c.kill("SIGKILL"); } catch {} }
  await Promise.all([...browsers].map((b) => b.close().catch(() => {})));
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
}
const hardLimit = setTimeout(async () => {
  console.log(JSON.stringify({ ok: false, error: `hard time limit of ${spec.timeoutSeconds} s reached`, partial: partialResults() }));
  await cleanup();
  process.exit(2);
}, spec.timeoutSeconds * 1000);

function startChild(name, cmd, args, opts = {}) {
  const logFile = path.join(spec.out, `${name}.log`);
  const fd = fs.openSync(logFile, "w");
  const child = spawn(cmd, args, { stdio: ["ignore", opts.pipeStdout ? "pipe" : fd, fd], env: { ...process.env, ...(opts.env ?? {}) }, cwd: opts.cwd ?? ROOT });
  fs.closeSync(fd);
  children.add(child);
  child.exitPromise = new Promise((resolve) => child.on("exit", (code, signal) => { children.delete(child); resolve({ code, signal }); }));
  child.logFile = logFile;
  return child;
}

// ---- the stream source ---------------------------------------------------------------------
// The VOD playlist the Rust test generated: its segments, in order.
function readSource(dir) {
  const text = fs.readFileSync(path.join(dir, "playlist.m3u8"), "utf8");
  const segments = [];
  let duration = null;
  let target = 2;
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("#EXT-X-TARGETDURATION:")) target = Number(line.split(":")[1]);
    else if (line.startsWith("#EXTINF:")) duration = Number(line.slice(8).split(",")[0]);
    else if (line && !line.startsWith("#")) {
      const file = path.join(dir, line.trim());
      segments.push({ file, duration, size: fs.statSync(file).size });
      duration = null;
    }
  }
  if (!segments.length) throw new Error(`no segments in ${dir}/playlist.m3u8`);
  return { segments, target };
}
const source = readSource(spec.media);
const sha256File = (f) => crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex");

// A lane's stream under /<lane>/live/ or /<lane>/vod/: playlist, segments seg_<n>.ts (n = media
// sequence number; the source's segment n - first) and a PeerTube-format segments-sha256.json.
function makeStream(lane) {
  const s = lane.stream;
  const dir = `/${lane.name}/${s.type}`;
  const first = s.type === "vod" ? (s.mediaSequence ?? 0) : 0;
  const count = s.type === "vod" ? source.segments.length : Math.min(s.endAfter, source.segments.length);
  const stream = {
    dir, mirrorDir: `/${lane.name}/mirror-${s.type}`, first, count, type: s.type, startedAt: null,
    segmentName: (n) => `seg_${n}.ts`,
    served: {}, // client kind -> { segments, bytes }
    log: [],    // segment requests: { t (ms since the driver started), client, segment }
  };
  const hashes = {};
  for (let i = 0; i < count; i++) hashes[stream.segmentName(first + i)] = sha256File(source.segments[i].file);
  stream.hashesJson = JSON.stringify(hashes);
  // Live: `startSegments` are out when the lane starts, then one per segmentSeconds; the
  // playlist lists the last `window`; ENDLIST once `endAfter` are out.
  stream.available = () => {
    if (s.type === "vod") return { k: count, end: true };
    const produced = stream.startedAt === null ? 0 : Math.floor((Date.now() - stream.startedAt) / (s.segmentSeconds * 1000));
    const k = Math.min(count, s.startSegments + produced);
    return { k, end: k >= count };
  };
  stream.playlist = () => {
    const { k, end } = stream.available();
    const from = s.type === "vod" ? 0 : Math.max(0, k - s.window);
    let m = `#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:${source.target}\n#EXT-X-MEDIA-SEQUENCE:${first + from}\n`;
    if (s.type === "vod") m += "#EXT-X-PLAYLIST-TYPE:VOD\n";
    for (let i = from; i < k; i++) m += `#EXTINF:${source.segments[i].duration.toFixed(6)},\n${stream.segmentName(first + i)}\n`;
    if (end) m += "#EXT-X-ENDLIST\n";
    return m;
  };
  stream.segmentFile = (name) => {
    const m = /^seg_(\d+)\.ts$/.exec(name);
    if (!m) return null;
    const i = Number(m[1]) - first;
    const { k } = stream.available();
    return i >= 0 && i < k ? source.segments[i].file : null;
  };
  return stream;
}

// ---- HTTP: the page, the packages' browser builds, the lanes' streams ------------------------
const streams = {};
const STATIC = [
  [/^\/www\/(index\.html|page\.mjs)$/, (m) => path.join(here, m[1])],
  [/^\/node_modules\/((hls\.js|p2p-media-loader-core|p2p-media-loader-hlsjs)\/dist\/[\w.-]+)$/, (m) => path.join(MODULES, m[1])],
];
const MIME = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript", ".map": "application/json",
  ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".json": "application/json" };
const clientKind = (req) => (/gst-mesh/.test(req.headers["user-agent"] ?? "") ? "meshsrc" : /Chrom/.test(req.headers["user-agent"] ?? "") ? "browser" : "other");
const server = http.createServer((req, res) => {
  const u = new URL(req.url, "http://127.0.0.1");
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Access-Control-Allow-Origin", "*");
  const send = (status, type, body) => { res.statusCode = status; res.setHeader("Content-Type", type); res.end(body); };
  for (const [re, file] of STATIC) {
    const m = re.exec(u.pathname);
    if (m) {
      const f = file(m);
      if (!fs.existsSync(f)) return send(404, "text/plain", "not found");
      return send(200, MIME[path.extname(f)] ?? "application/octet-stream", fs.readFileSync(f));
    }
  }
  // A stream is served under its directory and, identically, under a mirror directory.
  let base = null;
  const stream = Object.values(streams).find((s) => (base = [s.dir, s.mirrorDir].find((d) => u.pathname.startsWith(`${d}/`))));
  if (!stream) return send(404, "text/plain", "not found");
  const name = u.pathname.slice(base.length + 1);
  if (name === "index.m3u8") return send(200, MIME[".m3u8"], stream.playlist());
  if (name === "segments-sha256.json") return send(200, MIME[".json"], stream.hashesJson);
  const file = stream.segmentFile(name);
  if (!file) return send(404, "text/plain", "not found");
  const data = fs.readFileSync(file);
  const kind = clientKind(req);
  const c = (stream.served[kind] ??= { segments: 0, bytes: 0 });
  c.segments++;
  c.bytes += data.length;
  if (stream.log.length < 1000) stream.log.push({ t: elapsed(), client: kind, segment: u.pathname.slice(1) });
  send(200, MIME[".ts"], data);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const ORIGIN = `http://127.0.0.1:${server.address().port}`;

// ---- trackers, each behind a logging WebSocket proxy ------------------------------------------
async function startTracker(lane) {
  const child = lane.tracker === "bundled"
    ? startChild(`${lane.name}-tracker`, spec.meshTracker, ["--listen", "127.0.0.1:0"], { pipeStdout: true })
    : startChild(`${lane.name}-tracker`, "node", [path.join(ROOT, "scripts/bittorrent-tracker.mjs"), "0"], { pipeStdout: true });
  const url = await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`${lane.tracker} tracker: no listening line`)), 20000);
    child.stdout.on("data", (d) => {
      buf += d;
      const m = / listening on (ws:\/\/127\.0\.0\.1:\d+)/.exec(buf);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.exitPromise.then((e) => reject(new Error(`${lane.tracker} tracker exited ${JSON.stringify(e)}`)));
  });
  child.stdout.resume();
  const messages = [];
  const bin2hex = (s) => Buffer.from(s, "latin1").toString("hex");
  const record = (conn, dir, text) => {
    let p;
    try { p = JSON.parse(text); } catch { messages.push({ t: elapsed(), conn, dir, unparsed: String(text).slice(0, 200) }); return; }
    const m = { t: elapsed(), conn, dir, action: p.action };
    for (const k of ["event", "numwant", "interval", "complete", "incomplete", "failure reason", "warning message"]) if (p[k] !== undefined) m[k] = p[k];
    if (typeof p.info_hash === "string") { m.info_hash = p.info_hash; m.info_hash_hex = bin2hex(p.info_hash); }
    if (typeof p.peer_id === "string") m.peer_id = p.peer_id;
    if (typeof p.to_peer_id === "string") m.to_peer_id = p.to_peer_id;
    if (Array.isArray(p.offers)) m.offers = p.offers.length;
    if (p.offer) m.offer = true;
    if (p.answer) m.answer = true;
    messages.push(m);
  };
  const proxy = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  let conns = 0;
  proxy.on("connection", (client) => {
    const conn = conns++;
    const upstream = new WebSocket(url);
    const queue = [];
    upstream.on("open", () => { for (const [d, b] of queue) upstream.send(d, { binary: b }); queue.length = 0; });
    client.on("message", (d, isBinary) => {
      if (!isBinary) record(conn, "up", d.toString());
      if (upstream.readyState === WebSocket.OPEN) upstream.send(d, { binary: isBinary }); else queue.push([d, isBinary]);
    });
    upstream.on("message", (d, isBinary) => {
      if (!isBinary) record(conn, "down", d.toString());
      if (client.readyState === WebSocket.OPEN) client.send(d, { binary: isBinary });
    });
    const closeBoth = () => { try { client.close(); } catch {} try { upstream.close(); } catch {} };
    client.on("close", closeBoth); upstream.on("close", closeBoth);
    client.on("error", closeBoth); upstream.on("error", closeBoth);
  });
  await new Promise((r) => proxy.on("listening", r));
  return { url: `ws://127.0.0.1:${proxy.address().port}`, upstream: url, messages, proxy, child };
}

function trackerView(messages) {
  const byInfoHash = {};
  for (const m of messages) {
    if (!m.info_hash) continue;
    const h = (byInfoHash[m.info_hash] ??= { info_hash_hex: m.info_hash_hex, announcers: {}, offersSent: 0, offersRelayed: 0, answersSent: 0, answersRelayed: 0 });
    if (m.dir === "up" && m.action === "announce") {
      if (m.peer_id && !m.answer) h.announcers[m.peer_id] = (h.announcers[m.peer_id] ?? 0) + 1;
      if (m.offers) h.offersSent += m.offers;
      if (m.answer) h.answersSent++;
    }
    if (m.dir === "down" && m.offer) h.offersRelayed++;
    if (m.dir === "down" && m.answer) h.answersRelayed++;
  }
  return { messages: messages.length, byInfoHash };
}

// ---- swarm identity, as p2p-media-loader 2.3 derives it (for the report) -----------------------
// A lone media playlist: preimage "0--------"; swarm "v2-{base}-main-{shortId}";
// info_hash base64(SHA-1(swarm)[0..15]).
function expectedSwarm(base) {
  const sha1 = (s) => crypto.createHash("sha1").update(s, "utf8").digest();
  const shortId = sha1("0--------").toString("base64");
  const swarm = `v2-${base}-main-${shortId}`;
  return { swarm, infoHash: sha1(swarm).subarray(0, 15).toString("base64") };
}

// ---- meshsrc -------------------------------------------------------------------------------
function startMeshsrc(lane, stream, tracker) {
  const out = path.join(spec.out, `${lane.name}-meshsrc.ts`);
  const base = lane.meshsrcFromMirror ? stream.mirrorDir : stream.dir;
  const args = ["-m", "-e", "meshsrc", "name=m", `location=${ORIGIN}${base}/index.m3u8`, `tracker=${tracker.url}`,
    `segment-hashes=${ORIGIN}${base}/segments-sha256.json`, "ice-address=127.0.0.1"];
  if (lane.swarmId) args.push(`swarm-id=${lane.swarmId}`);
  args.push(...(lane.meshsrcProperties ?? []), "!", "queue");
  // meshsrc's TS buffers carry no timestamps after the first, so nothing downstream paces
  // them: a VOD would be written out (and meshsrc gone from the swarm) at once. `identity
  // sleep-time` plays it out at one segment per period instead, as a viewer would.
  if (lane.meshsrcPaceMicros) args.push("!", "identity", `sleep-time=${lane.meshsrcPaceMicros}`);
  args.push("!", "filesink", "sync=true", `location=${out}`);
  const child = startChild(`${lane.name}-meshsrc`, "gst-launch-1.0", args, {
    env: { GST_PLUGIN_PATH: spec.pluginDir, GST_REGISTRY_1_0: path.join(spec.out, `${lane.name}-registry.bin`) },
  });
  child.outFile = out;
  child.startedAt = elapsed();
  log(`${lane.name}: meshsrc started`);
  return child;
}

function meshStatistics(logFile) {
  const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "";
  const lines = text.split("\n").filter((l) => l.includes("mesh-statistics,"));
  const last = lines.at(-1);
  const stats = {};
  if (last) for (const m of last.matchAll(/([a-z0-9-]+)=\((?:guint64|guint|gint|gint64|guint32)\)(\d+)/g)) stats[m[1]] = Number(m[2]);
  const warnings = text.split("\n").filter((l) => l.startsWith("WARNING:") || l.startsWith("ERROR:")).slice(0, 20);
  return { messages: lines.length, last: last ? stats : null, warnings };
}

// ---- browser -------------------------------------------------------------------------------
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  // ICE in an lo-only namespace: loopback candidates are allowed only with this flag, and
  // host candidates are exposed only with media permission (granted by the fake UI).
  "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required"];
async function startBrowser(lane, stream, tracker) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `gst-mesh-chromium-${lane.name}-`));
  tmpDirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  browsers.add(ctx);
  const page = await ctx.newPage();
  const pageLog = [];
  page.on("console", (m) => { if (pageLog.length < 200) pageLog.push(`${m.type()}: ${m.text()}`.slice(0, 300)); });
  page.on("pageerror", (e) => pageLog.push(`pageerror: ${e}`));
  const u = new URL(`${ORIGIN}/www/index.html`);
  u.searchParams.set("src", `${ORIGIN}${stream.dir}/index.m3u8`);
  u.searchParams.set("label", lane.name);
  const core = { ...(lane.core ?? {}), announceTrackers: [tracker.url] };
  if (lane.swarmId) core.swarmId = lane.swarmId;
  u.searchParams.set("core", JSON.stringify(core));
  u.searchParams.set("hls", JSON.stringify(lane.hls ?? {}));
  await page.goto(u.toString());
  log(`${lane.name}: browser started (Chromium ${ctx.browser()?.version() ?? "?"})`);
  return { ctx, page, pageLog, startedAt: elapsed(), version: ctx.browser()?.version() ?? null };
}

// ---- the page's data-channel log, decoded with p2p-media-loader's deserializer ----------------
const COMMANDS = ["announcement", "request", "data", "completed", "absent", "cancel"];
function analyseWire(wire) {
  const perChannel = {};
  const decodeErrors = [];
  const announcedIds = new Set();
  for (const e of wire.entries) {
    const c = (perChannel[e.ch] ??= {
      ch: e.ch, label: wire.channels[e.ch]?.label, rx: {}, tx: {}, rxRaw: { messages: 0, bytes: 0 }, txRaw: { messages: 0, bytes: 0 },
      joiners: {}, requests: [], outstanding: null, uploading: null,
      pipelined: 0, pipelinedWhileUploading: 0, violations: [], cancelsFromRemote: 0, unanswered: 0, history: [],
    });
    if (e.raw !== undefined) {
      const r = e.dir === "rx" ? c.rxRaw : c.txRaw;
      r.messages += e.raw; r.bytes += e.bytes;
      continue;
    }
    if (!e.hex) continue;
    const bytes = Uint8Array.from(Buffer.from(e.hex, "hex"));
    const commands = [];
    const joinerKey = e.dir;
    try {
      c.joiners[joinerKey] ??= new BinaryCommandChunksJoiner((cmd) => { commands.push(cmd); });
      c.joiners[joinerKey].addCommandChunk(bytes);
    } catch (err) {
      decodeErrors.push({ ch: e.ch, dir: e.dir, t: e.t, error: String(err), hex: e.hex.slice(0, 80) });
      c.joiners[joinerKey] = undefined;
      continue;
    }
    if (commands.length) c.joiners[joinerKey] = undefined; // a new joiner for the next command
    for (const raw of commands) {
      let cmd;
      try { cmd = deserializeCommand(raw); } catch (err) { decodeErrors.push({ ch: e.ch, dir: e.dir, t: e.t, error: String(err) }); continue; }
      const name = COMMANDS[cmd.c] ?? `type${cmd.c}`;
      const counts = e.dir === "rx" ? c.rx : c.tx;
      counts[name] = (counts[name] ?? 0) + 1;
      const brief = { t: e.t, dir: e.dir, cmd: name, i: cmd.i, r: cmd.r, ...(cmd.b ? { b: cmd.b } : {}), ...(cmd.s !== undefined ? { s: cmd.s } : {}) };
      if (name === "announcement") {
        brief.l = cmd.l?.length ?? 0; brief.p = cmd.p?.length ?? 0;
        if (e.dir === "rx") for (const id of [...(cmd.l ?? []), ...(cmd.p ?? [])]) announcedIds.add(id);
      } else {
        c.history.push(brief);
        if (c.history.length > 400) c.history.shift();
      }
      // The remote (meshsrc) side of the link: a request is outstanding from its arrival until
      // the page answers it (completed or absent) or the remote cancels it. The page uploads
      // from its data header until completed.
      if (e.dir === "rx" && name === "request") {
        c.requests.push({ t: e.t, i: cmd.i, r: cmd.r, b: cmd.b ?? 0 });
        if (c.outstanding) {
          c.pipelined++;
          const uploading = c.uploading !== null;
          if (uploading) c.pipelinedWhileUploading++;
          if (c.violations.length < 10) c.violations.push({ t: e.t, request: { i: cmd.i, r: cmd.r }, outstanding: c.outstanding, uploading, recent: c.history.slice(-8) });
          if (c.uploading === null) c.unanswered++;
        }
        c.outstanding = { i: cmd.i, r: cmd.r, t: e.t };
        c.uploading = null;
      } else if (e.dir === "tx" && name === "data") {
        if (c.outstanding && c.outstanding.r === cmd.r) c.uploading = { i: cmd.i, r: cmd.r, s: cmd.s };
      } else if (e.dir === "tx" && (name === "completed" || name === "absent")) {
        if (c.outstanding && c.outstanding.r === cmd.r) { c.outstanding = null; c.uploading = null; }
      } else if (e.dir === "rx" && name === "cancel") {
        c.cancelsFromRemote++;
        if (c.outstanding && c.outstanding.r === cmd.r) { c.outstanding = null; c.uploading = null; }
      }
    }
  }
  const channels = Object.values(perChannel).map(({ joiners, outstanding, uploading, history, ...rest }) => ({
    ...rest, requests: rest.requests.length, requestList: rest.requests.slice(0, 200), outstandingAtEnd: outstanding, lastCommands: history.slice(-12),
  }));
  const ids = [...announcedIds].sort((a, b) => a - b);
  return {
    entries: wire.entries.length, dropped: wire.dropped, tapError: wire.tapError ?? null, decodeErrors: decodeErrors.slice(0, 10),
    channels, pipelined: channels.reduce((n, c) => n + c.pipelined, 0),
    pipelinedWhileUploading: channels.reduce((n, c) => n + c.pipelinedWhileUploading, 0),
    requestsReceived: channels.reduce((n, c) => n + c.requests, 0),
    announcedIdsReceived: { count: ids.length, min: ids[0] ?? null, max: ids.at(-1) ?? null },
  };
}

function summarizeBrowser(stats) {
  if (!stats || stats.error) return stats;
  const p2pLoaded = stats.loaded.filter((x) => x.source === "p2p");
  return {
    // page time (performance.now(), the `t` of page events and of the wire log) + this =
    // driver time (ms since the driver started, the `t` of the tracker and origin logs)
    pageTimeOffsetMs: Math.round(stats.timeOrigin - t0),
    bytes: stats.bytes, uploadedBytes: stats.uploadedBytes, byPeer: stats.byPeer,
    segmentsLoaded: { http: stats.loaded.filter((x) => x.source === "http").length, p2p: p2pLoaded.length },
    p2pLoaded, validated: stats.validated,
    errors: stats.errors, aborts: stats.aborts, peerEvents: stats.peerEvents,
    trackerWarnings: stats.trackerWarnings, trackerErrors: stats.trackerErrors,
    hlsFatalErrors: stats.hlsErrors.filter((e) => e.fatal), hlsErrors: stats.hlsErrors.length,
    levelUpdated: stats.levelUpdated, playback: stats.playback, config: stats.ready,
  };
}

// ---- a lane ----------------------------------------------------------------------------------
const results = {};
function partialResults() { return results; }

async function runLane(lane) {
  const result = (results[lane.name] = { name: lane.name, lane, phase: "starting" });
  const stream = (streams[lane.name] = makeStream(lane));
  const tracker = await startTracker(lane);
  result.trackerUpstream = tracker.upstream;
  const manifestUrl = `${ORIGIN}${stream.dir}/index.m3u8`;
  const meshsrcUrl = `${ORIGIN}${lane.meshsrcFromMirror ? stream.mirrorDir : stream.dir}/index.m3u8`;
  Object.assign(result, { manifestUrl, meshsrcManifestUrl: meshsrcUrl });
  result.stream = { type: stream.type, firstSequence: stream.first, segments: stream.count, segmentUrlPrefix: `${stream.dir}/seg_` };
  // The swarm both sides must be in, and (for the report) the ones of their URLs.
  result.expected = { ...expectedSwarm(lane.swarmId ?? manifestUrl),
    ofBrowserUrl: expectedSwarm(manifestUrl).infoHash, ofMeshsrcUrl: expectedSwarm(meshsrcUrl).infoHash };
  stream.startedAt = Date.now();
  const laneStart = elapsed();
  let meshsrc = null;
  let browser = null;
  const deadline = laneStart + lane.laneSeconds * 1000;
  result.phase = "running";
  if (lane.first === "browser") {
    browser = await startBrowser(lane, stream, tracker);
    await sleep(lane.joinAfterSeconds * 1000);
    meshsrc = startMeshsrc(lane, stream, tracker);
  } else {
    meshsrc = startMeshsrc(lane, stream, tracker);
    await sleep(lane.joinAfterSeconds * 1000);
    browser = await startBrowser(lane, stream, tracker);
  }
  const exit = await Promise.race([meshsrc.exitPromise, sleep(Math.max(0, deadline - elapsed())).then(() => null)]);
  log(`${lane.name}: meshsrc ${exit ? `exited ${JSON.stringify(exit)}` : "still running at the lane's end"}`);
  await sleep(1000);
  const page = await browser.page.evaluate(() => JSON.parse(JSON.stringify({ stats: window.__stats ?? null, wire: window.__wire ?? null })))
    .catch((e) => ({ stats: { error: String(e) }, wire: null }));
  if (!exit) { meshsrc.kill("SIGKILL"); await meshsrc.exitPromise; }
  await browser.ctx.close().catch(() => {});
  browsers.delete(browser.ctx);
  tracker.proxy.close();
  tracker.child.kill("SIGKILL");
  await tracker.child.exitPromise;
  const view = trackerView(tracker.messages);
  const peerIds = new Set(Object.values(view.byInfoHash).flatMap((h) => Object.keys(h.announcers)));
  Object.assign(result, {
    phase: "done",
    chromium: browser.version,
    startedAt: { browserMs: browser.startedAt - laneStart, meshsrcMs: meshsrc.startedAt - laneStart },
    meshsrc: {
      exit, endedByItself: exit !== null, output: meshsrc.outFile, outputBytes: fs.existsSync(meshsrc.outFile) ? fs.statSync(meshsrc.outFile).size : 0,
      log: meshsrc.logFile, statistics: meshStatistics(meshsrc.logFile),
      peerIds: [...peerIds].filter((p) => p.startsWith("-GM")),
    },
    browser: { peerIds: [...peerIds].filter((p) => p.startsWith("-PM")), ...summarizeBrowser(page.stats), pageLog: browser.pageLog.slice(0, 50) },
    wire: page.wire ? analyseWire(page.wire) : null,
    tracker: view,
    origin: stream.served,
    originLog: stream.log,
    laneStartedAtMs: laneStart,
  });
  fs.writeFileSync(path.join(spec.out, `${lane.name}-tracker.json`), JSON.stringify(tracker.messages, null, 1));
  if (page.wire) fs.writeFileSync(path.join(spec.out, `${lane.name}-wire.json`), JSON.stringify(page.wire));
  return result;
}

let exitCode = 0;
try {
  const lanes = await Promise.all(spec.lanes.map((l) => runLane(l)));
  const out = { ok: true, origin: ORIGIN, seconds: elapsed() / 1000, lanes };
  fs.writeFileSync(path.join(spec.out, "result.json"), JSON.stringify(out, null, 2));
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e), partial: partialResults() }));
  exitCode = 1;
} finally {
  clearTimeout(hardLimit);
  await cleanup();
  server.closeAllConnections?.();
  server.close();
  process.exit(exitCode);
}
