#!/usr/bin/env python3
"""Builds the plugin with cargo on behalf of meson and copies the shared
library to the path meson expects, in the manner of gst-plugins-rs's
cargo_wrapper.py. Cargo does its own incremental rebuilds, so meson runs this
every time (build_always_stale).

usage: cargo-wrapper.py CARGO MANIFEST TARGET_DIR PROFILE LIBNAME OUTPUT
"""

import os
import shutil
import subprocess
import sys


def main(argv):
    if len(argv) != 7:
        sys.stderr.write(__doc__)
        return 2
    cargo, manifest, target_dir, profile, libname, output = argv[1:]

    env = os.environ.copy()
    env["CARGO_TARGET_DIR"] = target_dir

    cmd = [cargo, "build", "--manifest-path", manifest, "--target-dir", target_dir, "--lib"]
    if profile == "release":
        cmd.append("--release")
    elif profile != "debug":
        cmd += ["--profile", profile]

    print("cargo-wrapper: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        return rc

    # Cargo's output folder for the "dev" profile is "debug".
    outdir = "debug" if profile in ("debug", "dev") else profile
    built = os.path.join(target_dir, outdir, libname)
    if not os.path.exists(built):
        sys.stderr.write("cargo-wrapper: %s was not produced\n" % built)
        return 1
    shutil.copy2(built, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
