#!/usr/bin/env bash
# Installs what gst-mesh needs to build, test and run the demo.
#
#   bash scripts/setup-deps.sh        everything: the build, the tests and the demo
#                                     (scripts/run-tests.sh and CI call it so)
#   bash scripts/setup-deps.sh demo   only what scripts/demo.sh needs: the Debian packages
#                                     that build the plugin and run the demo's GStreamer
#                                     pipelines (hlssink2 with x264enc and avenc_aac, and
#                                     playbin3 viewers), and no test tools
#
# Idempotent: only missing Debian packages are installed (apt-get update runs
# once, and only if something is missing); cargo-nextest is installed into the
# project's own .tools/ only if `cargo nextest` is not already available.
# The real WebTorrent trackers the tracker tests run against are installed into
# .tools/ too, each only if missing: bittorrent-tracker (npm, .tools/npm) and
# aquatic_ws (cargo, .tools/bin).
# The browser interop test (tests/browser.rs) needs Debian's `chromium`, `unshare`
# (util-linux) and `ip` (iproute2), and the npm packages pinned in
# tests/browser/package.json (hls.js, p2p-media-loader, playwright-core, ws),
# installed into .tools/browser. A Chromium that cannot be installed is reported,
# not fatal: that test then says loudly that it did not run.
# A Rust toolchain (cargo, rustc >= 1.92) must already be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

MODE="${1:-all}"
case "$MODE" in
  all | demo) ;;
  *)
    echo "usage: $0 [demo]" >&2
    exit 2
    ;;
esac

export DEBIAN_FRONTEND=noninteractive
export PATH="$ROOT/.tools/bin:$HOME/.cargo/bin:$PATH"

# What building the plugin and running the demo need (examples/mesh-demo.rs):
# pkg-config and the GStreamer development packages for the gstreamer crates;
# gst-launch-1.0 (tools) with videotestsrc, x264enc, h264parse, audiotestsrc,
# avenc_aac, aacparse and hlssink2 to make the stream; playbin3 with tsdemux and
# the decoders for the viewers; flock (util-linux) for the build lock.
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
  util-linux
)

# A C compiler and the C library headers: rustc links through `cc`, and ring
# (rustls, webrtc) compiles C. Only asked for when `cc` is absent.
if ! command -v cc >/dev/null 2>&1; then
  PACKAGES+=(gcc libc6-dev)
fi

if [ "$MODE" = all ]; then
  # The tests: ffmpeg packages test streams, openssl encrypts AES-128 ones,
  # meson and ninja build the meson install, iproute2 sets up the network
  # namespaces of the browser test.
  PACKAGES+=(
    ffmpeg
    openssl
    meson
    ninja-build
    iproute2
  )
  # Node.js runs bittorrent-tracker in the tracker tests. Node may come from
  # elsewhere than Debian: only ask for Debian's packages when a command is absent.
  if ! command -v node >/dev/null 2>&1; then
    PACKAGES+=(nodejs)
  fi
  if ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(npm)
  fi
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

apt_updated=0
apt_update() {
  if [ "$apt_updated" -eq 0 ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-deps: installing missing Debian packages: ${missing[*]}"
  apt_update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q "${missing[@]}"
else
  echo "setup-deps: all Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup-deps: cargo not found; a Rust toolchain (rustup) is required" >&2
  exit 1
fi

# Cargo.toml asks for rust-version 1.92; cargo itself refuses an older rustc.
rustc_version="$(rustc --version 2>/dev/null | awk '{print $2}')"
if [ -n "$rustc_version" ] && \
    [ "$(printf '%s\n' 1.92 "$rustc_version" | sort -V | head -n1)" != 1.92 ]; then
  echo "setup-deps: WARNING: rustc $rustc_version is older than 1.92, which gst-mesh needs" >&2
fi

if [ "$MODE" = demo ]; then
  echo "setup-deps: demo dependencies present"
  exit 0
fi

# Chromium for tests/browser.rs, on its own: a machine without it (or without
# the package) can still build and run every other test.
if [ -x /usr/bin/chromium ]; then
  echo "setup-deps: chromium present"
else
  echo "setup-deps: installing chromium (Debian package) for the browser interop test"
  if ! { apt_update && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q chromium; } || [ ! -x /usr/bin/chromium ]; then
    echo "setup-deps: WARNING: chromium could not be installed; tests/browser.rs will not run" >&2
  fi
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

# The browser test's npm packages, exactly as pinned in tests/browser/package.json
# (no lock file: the pins are exact). --ignore-scripts: nothing here needs an
# install script, and node-datachannel (pulled in by bittorrent-tracker, unused
# in the browser bundle) fails to build. Reinstalled when package.json changes.
BROWSER="$ROOT/.tools/browser"
browser_ok=1
cmp -s "$ROOT/tests/browser/package.json" "$BROWSER/package.json" || browser_ok=0
for pkg in hls.js p2p-media-loader-core p2p-media-loader-hlsjs playwright-core ws; do
  [ -f "$BROWSER/node_modules/$pkg/package.json" ] || browser_ok=0
done
if [ "$browser_ok" -eq 1 ]; then
  echo "setup-deps: browser test packages present"
else
  echo "setup-deps: installing the browser test packages into $BROWSER"
  mkdir -p "$BROWSER"
  cp "$ROOT/tests/browser/package.json" "$BROWSER/package.json"
  npm install --prefix "$BROWSER" --ignore-scripts --no-audit --no-fund
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

