"""Opens two Data.fs files with ZODB and compares them as ZODB sees them:
every transaction (tid, status, user, description, extension) and every
record (oid, tid, data as loaded, data_txn). Prints a summary line and exits
1 on the first difference, naming it.

    python zodb_compare.py EXPECTED ACTUAL
"""

import sys

from ZODB.FileStorage import FileStorage


def transactions(path):
    storage = FileStorage(path, read_only=True)
    try:
        for txn in storage.iterator():
            # Record order inside a transaction means nothing to ZODB.
            records = sorted((r.oid, r.tid, r.data, r.data_txn) for r in txn)
            yield (txn.tid, txn.status, txn.user, txn.description,
                   txn.extension_bytes if hasattr(txn, "extension_bytes")
                   else txn.extension, records)
        # Loads through the index too: the current revision of every object.
        current = {}
        for oid in storage._index.keys():
            try:
                current[oid] = storage.load(oid)
            except Exception as error:
                current[oid] = repr(error)
        yield ("current", current)
    finally:
        storage.close()


def main():
    expected, actual = sys.argv[1:3]
    count = 0
    a_list = list(transactions(expected))
    b_list = list(transactions(actual))
    if len(a_list) != len(b_list):
        print("different numbers of transactions: %d / %d"
              % (len(a_list) - 1, len(b_list) - 1))
        return 1
    for a, b in zip(a_list, b_list):
        if a != b:
            print("difference:\n  %r\n  %r" % (a[:5], b[:5]))
            return 1
        count += 1
    records = sum(len(t[5]) for t in a_list[:-1])
    print("identical for ZODB: %d transactions, %d records, %d current objects"
          % (count - 1, records, len(a_list[-1][1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
