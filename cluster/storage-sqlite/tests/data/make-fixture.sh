#!/bin/sh
# Rebuilds neopy-s1.sqlite and neopy-s2.sqlite with NEO/py (see README.md):
# 1 master, 1 admin, 2 SQLite storages, 3 partitions, 1 replica; a ZODB
# client (fixture_client.py) commits four transactions, then the cluster is
# stopped cleanly (neoctl set cluster STOPPING).
#   NEO_PY_DIR=/tmp/neoppod NEO_PY_PYTHON=/tmp/neovenv/bin/python \
#   ZODB_PYTHON=/tmp/zvenv/bin/python ZODB_SITE=/tmp/neovenv/lib/python3.11/site-packages \
#   ./make-fixture.sh
# With LOCKED=1, the storages are killed (SIGKILL) right after the client's last
# commit, before NEO/py's deferred commit of the unlock: the last transaction
# stays locked in ttrans/tobj. Only node 1's file is kept, as neopy-locked.sqlite.
set -e
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cd "$work"
PY=${NEO_PY_PYTHON:-/tmp/neovenv/bin/python}
NEO=${NEO_PY_DIR:-/tmp/neoppod}
export PYTHONPATH=$NEO
ctl="$PY $NEO/neoctl -a 127.0.0.1:25011"
$PY $NEO/neomaster -c fixture -b 127.0.0.1:25010 -p 3 -r 1 -A 2 -l master.log & echo $! > master.pid
$PY $NEO/neoadmin -c fixture -b 127.0.0.1:25011 -m 127.0.0.1:25010 -l admin.log & echo $! > admin.pid
$PY $NEO/neostorage -c fixture -b 127.0.0.1 -m 127.0.0.1:25010 -a SQLite -d "$work/s1.sqlite" -l s1.log & echo $! > s1.pid
$PY $NEO/neostorage -c fixture -b 127.0.0.1 -m 127.0.0.1:25010 -a SQLite -d "$work/s2.sqlite" -l s2.log & echo $! > s2.pid
sleep 4
$ctl print cluster
$ctl print pt
PYTHONPATH=$NEO:${ZODB_SITE:-/tmp/neovenv/lib/python3.11/site-packages} \
    ${ZODB_PYTHON:-/tmp/zvenv/bin/python} "$here/fixture_client.py"
if [ -n "$LOCKED" ]; then
    kill -9 "$(cat s1.pid)" "$(cat s2.pid)"
    sleep 1
    for f in s1 s2; do
        nid=$(python3 -c "import sqlite3; print(sqlite3.connect('$f.sqlite').execute(\"select value from config where name='nid'\").fetchone()[0])")
        [ "$nid" = 1 ] && cp "$f.sqlite" "$here/neopy-locked.sqlite"
    done
    kill "$(cat admin.pid)" "$(cat master.pid)"
    echo "logs left in $work"
    exit 0
fi
# Give the storages time to commit the last unlock (NEO/py defers it by 1 s).
sleep 3
$ctl print ids
$ctl print node
$ctl set cluster STOPPING
sleep 3
for p in s1 s2 admin master; do kill "$(cat $p.pid)" 2>/dev/null || true; done
sleep 1
# Name the files after the NID each storage got.
for f in s1 s2; do
    nid=$(python3 -c "import sqlite3; print(sqlite3.connect('$f.sqlite').execute(\"select value from config where name='nid'\").fetchone()[0])")
    cp "$f.sqlite" "$here/neopy-s$nid.sqlite"
done
echo "logs left in $work"
