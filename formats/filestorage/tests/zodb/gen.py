"""Generate FileStorage files with real ZODB for neo-filestorage's tests.

usage: gen.py OUTDIR

Writes into OUTDIR:
  history.fs  many transactions: BTrees, many revisions, large objects
              (> 1 MB), undo (and undo of undo), deleted objects
              (IExternalGC), weak references, non-ASCII metadata and
              extensions, empty transactions
  packed.fs   a copy of history.fs packed by ZODB in the middle of its life
  dangling.fs references to an object whose creation was undone, and to a
              deleted one (what fsrefs reports)
  times.txt   interesting pack times for history.fs, one Unix time a line

Time is faked (one second per transaction from 2024-01-01) so that tids,
and therefore the files, are the same at every run.
"""
import calendar
import sys
import time

_now = [float(calendar.timegm((2024, 1, 1, 0, 0, 0)))]


def tick(seconds=1.0):
    _now[0] += seconds


time.time = lambda: _now[0]

import BTrees.OOBTree  # noqa: E402
import persistent  # noqa: E402
import persistent.mapping  # noqa: E402
import persistent.wref  # noqa: E402
import transaction  # noqa: E402
import ZODB  # noqa: E402
import ZODB.Connection  # noqa: E402
import ZODB.FileStorage  # noqa: E402
from ZODB.utils import p64  # noqa: E402


from neotest import Item  # noqa: E402


def commit(user='', note='', ext=None):
    txn = transaction.get()
    if user:
        txn.user = user
    if note:
        txn.note(note)
    for key, value in (ext or {}).items():
        txn.setExtendedInfo(key, value)
    transaction.commit()
    tick()


def delete_object(storage, oid):
    """IExternalGC deleteObject in a storage-level transaction."""
    serial = storage.load(oid)[1]
    txn = ZODB.Connection.TransactionMetaData()
    txn.note('gc')
    storage.tpc_begin(txn)
    storage.deleteObject(oid, serial, txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)
    tick()


def undo_last(db, note, which=0):
    entry = db.undoLog(0, 20)[which]
    db.undo(entry['id'])
    commit(note=note)


def history(path, times):
    storage = ZODB.FileStorage.FileStorage(path, create=True)
    db = ZODB.DB(storage)
    tick()
    conn = db.open()
    root = conn.root()
    root['tree'] = BTrees.OOBTree.OOBTree()
    root['items'] = persistent.mapping.PersistentMapping()
    commit('/ alice', 'create the tree', {'k': 'v'})
    for i in range(120):
        root['tree']['key%04d' % i] = Item(i)
        if i % 3 == 0:
            root['items']['i%d' % (i % 10)] = Item(-i)
        commit('/ bob', 'add %d' % i)
    times.append(_now[0] - 0.5)
    for round_ in range(5):
        for i in range(0, 120, 7):
            root['tree']['key%04d' % i].value = (round_, i)
        commit('/ carol', 'round %d' % round_, {'round': round_})
    big = Item(b'x' * (1 << 20) + b'tail')
    root['big'] = big
    root['big2'] = Item(bytes(range(256)) * 6000)
    commit('/ dave', 'large objects')
    big.value = b'y' * (1536 * 1024)
    commit('/ dave', 'larger object')
    times.append(_now[0] - 0.5)
    user = '/ jos\u00e9 \u00e9t\u00e9'
    commit(user, 'caf\u00e9 \u2603 note', {'unicode': '\u00e9\u00e8', 'n': 42, 'bytes': b'\xff\x00'})
    # Undo, and undo of the undo.
    root['tree']['key0001'].value = 'changed'
    commit('/ erin', 'to be undone')
    undo_last(db, 'undo it')
    undo_last(db, 'redo it')
    # Creation undone.
    root['ghost'] = Item('ghost')
    commit('/ erin', 'create ghost')
    undo_last(db, 'undo ghost creation')
    times.append(_now[0] - 0.5)
    # Weak references do not keep objects alive.
    target = Item('weak target')
    conn.add(target)
    root['weak'] = persistent.wref.WeakRef(target)
    commit('/ frank', 'weak reference')
    # An empty transaction.
    transaction.get().note('empty')
    commit()
    # A deleted object (external GC); it must be unreferenced first.
    victim = Item('victim')
    root['victim'] = victim
    commit('/ gc', 'victim')
    oid = victim._p_oid
    del root['victim']
    commit('/ gc', 'unlink victim')
    conn.close()
    delete_object(storage, oid)
    conn = db.open()
    root = conn.root()
    for i in range(60, 120):
        del root['tree']['key%04d' % i]
    commit('/ henry', 'prune tree')
    times.append(_now[0] - 0.5)
    for i in range(30):
        root['items']['late%d' % i] = Item(i)
        commit('/ ivy', 'late %d' % i)
    times.append(_now[0] + 100)
    conn.close()
    db.close()


def dangling(path):
    storage = ZODB.FileStorage.FileStorage(path, create=True)
    db = ZODB.DB(storage)
    tick()
    conn = db.open()
    root = conn.root()
    root['a'] = Item('a')
    commit(note='a')
    holder = Item(None)
    root['holder'] = holder
    commit(note='holder')
    # holder refers to b; then b's creation is undone by undoing only the
    # transaction that created b (holder keeps the reference).
    b = Item('b')
    conn.add(b)
    commit(note='create b')
    holder.value = b
    commit(note='link b')
    entries = db.undoLog(0, 10)
    create_b = [e for e in entries if e['description'] in (b'create b', 'create b')][0]
    db.undo(create_b['id'])
    commit(note='undo create b')
    c = Item('c')
    root['c'] = c
    commit(note='c')
    conn.close()
    delete_object(storage, c._p_oid)
    db.close()


def main(outdir):
    times = []
    history(outdir + '/history.fs', times)
    import shutil
    shutil.copyfile(outdir + '/history.fs', outdir + '/packed.fs')
    storage = ZODB.FileStorage.FileStorage(outdir + '/packed.fs')
    from ZODB.serialize import referencesf
    storage.pack(times[1], referencesf)
    storage.close()
    dangling(outdir + '/dangling.fs')
    with open(outdir + '/times.txt', 'w') as f:
        for t in times:
            f.write('%r\n' % t)


if __name__ == '__main__':
    main(sys.argv[1])
