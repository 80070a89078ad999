"""ZODB-side operations for neo-filestorage's tests.

usage:
  tool.py pack FILE UNIXTIME [--no-gc]   pack with ZODB's FileStorage.pack
  tool.py loadall FILE                   open with ZODB (writable), load the
                                         current revision of every object,
                                         walk the object graph from the root,
                                         print counts
  tool.py append FILE N                  open with ZODB and commit N more
                                         transactions through a DB
  tool.py refs FILE                      print referencesf() of every record
                                         (pos oid refs...) as ZODB finds them
  tool.py index FILE                     open with ZODB read-only and say
                                         whether FILE.index was used
"""
import sys

import neotest  # noqa: F401 (classes of the test databases)

import persistent
import transaction
import ZODB
import ZODB.FileStorage
from ZODB.FileStorage import FileIterator
from ZODB.serialize import referencesf
from ZODB.utils import u64


def pack(path, when, gc=True):
    storage = ZODB.FileStorage.FileStorage(path, pack_gc=gc)
    storage.pack(float(when), referencesf)
    storage.close()


def loadall(path):
    storage = ZODB.FileStorage.FileStorage(path)
    loaded = nodata = 0
    for oid in list(storage._index.keys()):
        try:
            storage.load(oid)
            loaded += 1
        except ZODB.POSException.POSKeyError:
            nodata += 1
    db = ZODB.DB(storage)
    conn = db.open()
    seen = set()
    todo = [conn.root()]
    while todo:
        obj = todo.pop()
        oid = getattr(obj, '_p_oid', None)
        if not isinstance(obj, persistent.Persistent) or oid in seen:
            continue
        seen.add(oid)
        obj._p_activate()
        state = obj.__getstate__()
        for value in walk(state):
            if isinstance(value, persistent.Persistent):
                todo.append(value)
    print('loaded %d nodata %d reachable %d' % (loaded, nodata, len(seen)))
    conn.close()
    db.close()


def walk(value, depth=0):
    if depth > 50:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from walk(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v, depth + 1)
    else:
        yield value


def append(path, n):
    import persistent.mapping
    storage = ZODB.FileStorage.FileStorage(path)
    db = ZODB.DB(storage)
    conn = db.open()
    root = conn.root()
    for i in range(int(n)):
        root['appended%d' % i] = persistent.mapping.PersistentMapping(
            {'i': i})
        t = transaction.get()
        t.note('appended by ZODB %d' % i)
        t.commit()
    conn.close()
    db.close()


def refs(path):
    for txn in FileIterator(path):
        for rec in txn:
            if rec.data is None:
                continue
            oids = referencesf(rec.data)
            print('%d %016x %s' % (rec.pos, u64(rec.oid),
                                   ' '.join(o.hex() for o in oids)))


def index(path):
    """Says whether ZODB accepted FILE.index instead of scanning."""
    original = ZODB.FileStorage.FileStorage._restore_index
    results = []

    def spy(self):
        result = original(self)
        results.append(result)
        return result
    ZODB.FileStorage.FileStorage._restore_index = spy
    storage = ZODB.FileStorage.FileStorage(path, read_only=True)
    n = len(storage)
    storage.close()
    print('objects %d index %s' % (n, 'used' if results and results[0] is not None else 'not used'))


def main(argv):
    cmd = argv[0]
    if cmd == 'pack':
        pack(argv[1], argv[2], '--no-gc' not in argv)
    elif cmd == 'loadall':
        loadall(argv[1])
    elif cmd == 'append':
        append(argv[1], argv[2])
    elif cmd == 'refs':
        refs(argv[1])
    elif cmd == 'index':
        index(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
