"""Print ZODB's iterator view of a FileStorage in neofs's canonical form.

usage: canon.py [--data] FILE

Same lines as `neofs dump --canonical [--data]`: one per transaction (tid,
status, user, description, raw extension, all hex) and one per record (oid,
tid, data_txn, data or its length and FNV-1a 64 digest).
"""
import sys

from ZODB.FileStorage import FileIterator
from ZODB.utils import u64


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def main(argv):
    with_data = '--data' in argv
    path = [a for a in argv if a != '--data'][0]
    out = sys.stdout
    for txn in FileIterator(path):
        status = txn.status.encode('ascii')
        out.write('txn %016x %s user=%s desc=%s ext=%s\n' % (
            u64(txn.tid), status.hex(), txn.user.hex(), txn.description.hex(),
            txn.extension_bytes.hex()))
        for rec in txn:
            if rec.data is None:
                data = 'None'
            elif with_data:
                data = rec.data.hex()
            else:
                data = 'len=%d:%016x' % (len(rec.data), fnv1a(rec.data))
            data_txn = 'None' if rec.data_txn is None else '%016x' % u64(rec.data_txn)
            out.write('  rec %016x %016x data_txn=%s data=%s\n' % (
                u64(rec.oid), u64(rec.tid), data_txn, data))


if __name__ == '__main__':
    main(sys.argv[1:])
