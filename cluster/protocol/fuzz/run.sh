#!/usr/bin/env bash
# Runs the cargo-fuzz target of neo-protocol for a bounded time (default 60 s):
#   cluster/protocol/fuzz/run.sh [SECONDS] [TARGET]
# When nightly Rust or cargo-fuzz is missing it says so and exits 0: the stable test
# `random_and_mutated_input_never_panics` (cluster/protocol/tests/protocol.rs) exercises the
# same entry point, neo_protocol::codec::fuzz_decode, in every CI run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
target=${2:-decode}
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here; skipping the cargo-fuzz run (the stable bounded fuzz test still runs)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz); skipping the cargo-fuzz run"
    exit 0
fi
# Seed the corpus with the protocol vectors, one file per packet, with a read size byte.
corpus=corpus/$target
mkdir -p "$corpus"
python3 - "$corpus" <<'PY' || echo "fuzz: could not seed the corpus from the vectors (python3 missing?)"
import json, sys, os
vectors = json.load(open("../tests/data/protocol-vectors.json"))
out = sys.argv[1]
for i, v in enumerate(vectors["vectors"]):
    if v["kind"] == "packet":
        with open(os.path.join(out, "vector-%03d" % i), "wb") as f:
            f.write(bytes([i % 64]) + bytes.fromhex("92a34e454f05" + v["hex"]))
PY
echo "fuzz: running target $target for ${seconds}s"
exec cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=2048
