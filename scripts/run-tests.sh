#!/usr/bin/env bash
# The test suite: builds the plugin (target/release/libgstmesh.so is needed by
# the gst-inspect/gst-launch based tests) and runs every test with nextest,
# falling back to `cargo test` when nextest is unavailable.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"
# Locks so that two cargo runs never build at once on this machine.
LOCK=/tmp/gst-mesh-cargo.lock

section() {
  echo
  echo "==================================================================="
  echo "== $*"
  echo "==================================================================="
}

section "Dependencies"
bash "$ROOT/scripts/setup-deps.sh"

section "Toolchain"
cargo --version
rustc --version
gst-inspect-1.0 --version

section "Build (cargo build --release)"
flock "$LOCK" cargo build --release
ls -l target/release/libgstmesh.so

if cargo nextest --version >/dev/null 2>&1; then
  section "Tests (cargo nextest run --release --no-fail-fast)"
  flock "$LOCK" cargo nextest run --release --no-fail-fast
else
  section "Tests (cargo test --release; cargo-nextest unavailable)"
  flock "$LOCK" cargo test --release --no-fail-fast
fi
