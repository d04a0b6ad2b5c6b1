#!/usr/bin/env bash
# The main job, end to end: generates a local HLS stream with hlssink2, serves
# it on 127.0.0.1 and plays it through `meshsrc ! decodebin ! fakesink`,
# printing progress. No display needed. Extra arguments go to the example.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

echo "== Dependencies"
bash "$ROOT/scripts/setup-deps.sh"

echo "== Build (cargo build --release --example play-local)"
# Build under the shared lock so it never overlaps another cargo build; the
# run itself then finds everything up to date.
flock /tmp/gst-mesh-cargo.lock cargo build --release --example play-local

echo "== Demo (cargo run --release --example play-local -- $*)"
exec cargo run --release --example play-local -- "$@"
