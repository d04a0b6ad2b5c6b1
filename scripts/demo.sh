#!/usr/bin/env bash
# The main job, end to end: generates a local live HLS stream with hlssink2,
# serves it on 127.0.0.1 with its segments-sha256.json, starts the bundled
# WebTorrent tracker and several playbin3 viewers on mesh+http://, and prints
# every second what share of the bytes came from peers. No display needed and
# nothing beyond loopback. Extra arguments go to the example
# (--viewers N, --seconds S).
#
# It installs and builds only what the demo needs: `setup-deps.sh demo` (no
# test tools), the mesh-tracker binary and the mesh-demo example.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

echo "== Dependencies (scripts/setup-deps.sh demo)"
bash "$ROOT/scripts/setup-deps.sh" demo

# Under the shared lock so it never overlaps another cargo build. mesh-demo
# starts the tracker from the folder above its own (target/release/mesh-tracker).
echo "== Build (mesh-tracker binary, mesh-demo example)"
flock /tmp/gst-mesh-cargo.lock cargo build --release -p mesh-tracker --bin mesh-tracker
flock /tmp/gst-mesh-cargo.lock cargo build --release --example mesh-demo

echo "== Demo (target/release/examples/mesh-demo $*)"
exec "$ROOT/target/release/examples/mesh-demo" "$@"
