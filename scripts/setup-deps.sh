#!/usr/bin/env bash
# Installs what gst-mesh needs to build, test and run the demo.
# Idempotent: only missing Debian packages are installed (apt-get update runs
# once, and only if something is missing); cargo-nextest is installed into the
# project's own .tools/ only if `cargo nextest` is not already available.
# The real WebTorrent trackers the tracker tests run against are installed into
# .tools/ too, each only if missing: bittorrent-tracker (npm, .tools/npm) and
# aquatic_ws (cargo, .tools/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive
export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

PACKAGES=(
  pkg-config
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-tools
  ffmpeg
  openssl
  meson
  ninja-build
)

# Node.js runs bittorrent-tracker in the tracker tests. Node may come from
# elsewhere than Debian: only ask for Debian's packages when a command is absent.
if ! command -v node >/dev/null 2>&1; then
  PACKAGES+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(npm)
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! is_installed "$pkg"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-deps: installing missing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q "${missing[@]}"
else
  echo "setup-deps: all Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup-deps: cargo not found; a Rust toolchain (rustup) is required" >&2
  exit 1
fi

if cargo nextest --version >/dev/null 2>&1; then
  echo "setup-deps: cargo-nextest present"
else
  echo "setup-deps: installing cargo-nextest into $ROOT/.tools"
  if ! flock /tmp/gst-mesh-cargo.lock \
      cargo install --locked --root "$ROOT/.tools" cargo-nextest; then
    echo "setup-deps: cargo-nextest install failed; tests will fall back to cargo test" >&2
  fi
fi

# Cargo installs share one lock with the project's builds when flock exists.
LOCKED=()
if command -v flock >/dev/null 2>&1; then
  LOCKED=(flock /tmp/gst-mesh-cargo.lock)
fi

if [ -f "$ROOT/.tools/npm/node_modules/bittorrent-tracker/package.json" ]; then
  echo "setup-deps: bittorrent-tracker present"
else
  echo "setup-deps: installing bittorrent-tracker into $ROOT/.tools/npm"
  mkdir -p "$ROOT/.tools/npm"
  npm install --prefix "$ROOT/.tools/npm" --ignore-scripts --no-audit --no-fund \
    bittorrent-tracker@11
fi

if [ -x "$ROOT/.tools/bin/aquatic_ws" ]; then
  echo "setup-deps: aquatic_ws present"
else
  echo "setup-deps: installing aquatic_ws into $ROOT/.tools (this takes a few minutes)"
  # Without its default features (Prometheus metrics, mimalloc): the metrics
  # crate its lock file pins no longer builds with current Rust, and the tests
  # need neither.
  "${LOCKED[@]}" cargo install --locked --no-default-features \
    --root "$ROOT/.tools" aquatic_ws@0.9.0
fi
