#!/usr/bin/env bash
# The migration benchmark: generates a Data.fs of SIZE_MB (examples/genfs.rs), migrates
# it with neomigrate (release, default options) into a local cluster of 2 SQLite storages
# (neosimple: 1 master, 1 admin) twice: with replicas 0, NEO's default (the partitions
# split between the storages), and with replicas 1 (every record on both); exports the
# first cluster back; and copies the file FileStorage to FileStorage with ZODB's
# zodbconvert (RelStorage's script, from PyPI, in a venv made here) for the reference.
# Prints MB/s and transactions/s of each with the ratio to zodbconvert.
# Nothing generated is kept (set KEEP=1 to keep the directory).
#
#   tools/neomigrate/bench.sh [SIZE_MB]     (default 1024)
set -euo pipefail
size_mb=${1:-1024}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build -q --release --locked -p neo-daemons -p neo-ctl -p neomigrate --bins --example genfs
bin=$root/target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/neo-migrate-bench.XXXXXX")
cluster_pid=
cleanup() {
    if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
        kill -INT "$cluster_pid"; wait "$cluster_pid" 2>/dev/null || true
    fi
    [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

venv=${BENCH_VENV:-$root/target/bench-venv}
if ! "$venv/bin/python" -c 'import relstorage, ZODB' >/dev/null 2>&1; then
    echo "making $venv with ZODB and RelStorage (for zodbconvert)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'ZODB>=6,<7' RelStorage
fi

"$bin/examples/genfs" "$work/source.fs" "$size_mb"
bytes=$(stat -c %s "$work/source.fs")
txns=$("$bin/neofs" stat "$work/source.fs" 2>/dev/null | awk '/^transactions:/ {print $2}' || true)

# Starts a cluster of 2 storages with $1 replicas; sets cluster_pid and masters.
start_cluster() {
    mkdir "$work/cluster$1"
    "$bin/neosimple" --replicas "$1" --partitions 12 --name bench_$$_$1 \
        --temp_dir "$work/cluster$1" >"$work/neosimple$1.out" 2>"$work/neosimple$1.err" &
    cluster_pid=$!
    for _ in $(seq 600); do grep -q "is RUNNING" "$work/neosimple$1.out" && break; sleep 0.1; done
    masters=$(awk '/masters:/ {print $2}' "$work/neosimple$1.out")
}

stop_cluster() {
    kill -INT "$cluster_pid"
    wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=
}

seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

start_cluster 1
s_in1=$(seconds "$bin/neomigrate" -q -c bench_$$_1 "$work/source.fs" "$masters")
stop_cluster
start_cluster 0
s_in=$(seconds "$bin/neomigrate" -q -c bench_$$_0 "$work/source.fs" "$masters")
s_out=$(seconds "$bin/neomigrate" -q -c bench_$$_0 "$masters" "$work/exported.fs")
stop_cluster
cat > "$work/convert.conf" <<CONF
<filestorage source>
  path $work/source.fs
  read-only true
</filestorage>
<filestorage destination>
  path $work/zodbconvert.fs
</filestorage>
CONF
s_zodb=$(seconds "$venv/bin/zodbconvert" "$work/convert.conf")
check=$("$bin/neomigrate" --verify-only "$work/source.fs" "$work/exported.fs" | head -n 1)

mb() { echo "scale=1; $bytes / 1000000 / $1" | bc -l; }
tps() { echo "scale=0; $txns / $1" | bc -l; }
ratio() { echo "scale=2; $2 / $1" | bc -l; }
echo "source: $((bytes / 1000000)) MB, $txns transactions ($size_mb MiB asked)"
printf '%-34s %9s %10s %12s %s\n' "" seconds "MB/s" "txn/s" "vs zodbconvert"
printf '%-34s %9.2f %10s %12s %s\n' "zodbconvert FS -> FS" "$s_zodb" "$(mb "$s_zodb")" "$(tps "$s_zodb")" "1.00"
printf '%-34s %9.2f %10s %12s %sx\n' "neomigrate FS -> NEO (replicas 0)" "$s_in" "$(mb "$s_in")" "$(tps "$s_in")" "$(ratio "$s_in" "$s_zodb")"
printf '%-34s %9.2f %10s %12s %sx\n' "neomigrate FS -> NEO (replicas 1)" "$s_in1" "$(mb "$s_in1")" "$(tps "$s_in1")" "$(ratio "$s_in1" "$s_zodb")"
printf '%-34s %9.2f %10s %12s %sx\n' "neomigrate NEO -> FS" "$s_out" "$(mb "$s_out")" "$(tps "$s_out")" "$(ratio "$s_out" "$s_zodb")"
echo "round trip: $check"
