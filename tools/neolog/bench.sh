#!/bin/sh
# Times neolog printing a generated log against `sqlite3 FILE 'select * from log'`, plain
# and xz-compressed. The log is written at bench time by our Logger (examples/genlog.rs)
# and deleted afterwards; nothing generated here is committed.
# Usage: tools/neolog/bench.sh [SIZE_MB]   (default 1024)
set -eu
size_mb=${1:-1024}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target/log}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CARGO_TARGET_DIR=$target cargo build -q --release -p neolog --bin neolog --example genlog
"$target/release/examples/genlog" "$work/bench.log" "$size_mb"
xz -T2 -1 -k "$work/bench.log"
bytes=$(stat -c %s "$work/bench.log")

# Prints the seconds a command takes, its output going to /dev/null.
seconds() {
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

rate() { echo "scale=1; $bytes / 1048576 / $1" | bc -l; }

echo "log: $((bytes / 1048576)) MiB uncompressed, $(($(stat -c %s "$work/bench.log.xz") / 1048576)) MiB xz"
s_sqlite=$(seconds sqlite3 "$work/bench.log" 'select * from log')
s_plain=$(seconds "$target/release/neolog" "$work/bench.log")
s_sqlite_xz=$(seconds sh -c "xz -dc '$work/bench.log.xz' > '$work/x.log' && sqlite3 '$work/x.log' 'select * from log'; rm -f '$work/x.log'")
s_xz=$(seconds "$target/release/neolog" "$work/bench.log.xz")
printf '%-34s %8.2f s %8s MiB/s\n' "sqlite3 'select * from log'" "$s_sqlite" "$(rate "$s_sqlite")"
printf '%-34s %8.2f s %8s MiB/s  ratio %s\n' "neolog (plain)" "$s_plain" "$(rate "$s_plain")" "$(echo "scale=2; $s_sqlite / $s_plain" | bc -l)"
printf '%-34s %8.2f s %8s MiB/s\n' "xz -dc + sqlite3" "$s_sqlite_xz" "$(rate "$s_sqlite_xz")"
printf '%-34s %8.2f s %8s MiB/s  ratio %s\n' "neolog (xz)" "$s_xz" "$(rate "$s_xz")" "$(echo "scale=2; $s_sqlite_xz / $s_xz" | bc -l)"
