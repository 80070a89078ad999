#!/usr/bin/env bash
# Runs the cargo-fuzz target of neo-filestorage for a bounded time:
#   formats/filestorage/fuzz/run.sh [SECONDS]     (default 60)
# Without nightly Rust or cargo-fuzz it says so and exits 0: the stable test
# `bad_files_give_errors_with_offsets_never_panics` drives the same entry
# point (neo_filestorage::fuzz) in every test run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here; skipping the cargo-fuzz run of the FileStorage reader"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed; skipping the cargo-fuzz run of the FileStorage reader"
    exit 0
fi
# Seed with the worked example (without its magic: the target adds it).
mkdir -p corpus/reader
tail -c +5 ../tests/data/example.fs > corpus/reader/example
echo "fuzz: running the FileStorage reader target for ${seconds}s"
export TMPDIR=${TMPDIR:-/dev/shm}
exec cargo +nightly fuzz run reader corpus/reader -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536
