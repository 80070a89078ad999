"""Makes a small Data.fs with real ZODB, holding what a migration must carry:
transactions with user, description and extension metadata (non-ASCII too),
a BTree of persistent objects changed over many transactions, large objects,
an undone transaction (backpointers), an undone creation, and objects deleted
with the storage's deleteObject (IExternalGC).

    python samples/make_sample.py OUTPUT [--transactions N] [--seed N] [--large-kb K]

samples/Data.fs was made with the defaults; it is committed so that the main
job needs no Python. Tests run this script again (ZODB from their venv).
"""

import argparse
import os
import random

import transaction
import ZODB
import ZODB.FileStorage
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData


class Document(Persistent):
    def __init__(self, title, body):
        self.title = title
        self.body = body


def commit(user, note, **extension):
    txn = transaction.get()
    txn.setUser(user)
    txn.note(note)
    for key, value in extension.items():
        txn.setExtendedInfo(key, value)
    transaction.commit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output")
    parser.add_argument("--transactions", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--large-kb", type=int, default=64)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for suffix in ("", ".index", ".lock", ".tmp"):
        if os.path.exists(args.output + suffix):
            os.remove(args.output + suffix)

    storage = ZODB.FileStorage.FileStorage(args.output)
    db = ZODB.DB(storage)
    conn = db.open()
    root = conn.root()
    root["documents"] = OOBTree()
    root["settings"] = PersistentMapping({"language": "fr", "pages": 20})
    commit("admin", "Create the site", path="/", origin="make_sample.py")

    documents = root["documents"]
    for i in range(args.transactions):
        for _ in range(rng.randint(1, 8)):
            key = "doc-%04d" % rng.randrange(300)
            body = " ".join(rng.choice(["lorem", "ipsum", "dolor", "sit", "amet",
                                        "élan", "naïve", "ZODB", "NEO"])
                            for _ in range(rng.randint(5, 120)))
            if key in documents:
                documents[key].body = body
            else:
                documents[key] = Document("Title %s" % key, body)
        commit("user%d" % rng.randrange(5), "Edit documents, batch %d" % i,
               request="/edit/%d" % i)

    # Large objects: incompressible bytes, then a new revision of one of them.
    root["attachment"] = Document("photo.jpg", os.urandom(args.large_kb * 1024))
    root["archive"] = Document("archive.bin",
                               bytes(rng.randrange(4) for _ in range(args.large_kb * 1024)))
    commit("Zoë", "Upload large files ✓")
    root["attachment"].body = os.urandom(args.large_kb * 1024)
    commit("Zoë", "Replace the photo")

    # Undo a transaction that changed existing objects: backpointers to older data.
    root["settings"]["pages"] = 50
    documents["doc-0000"] = Document("Mistake", "to be undone")
    commit("user1", "A change to undo")
    undone = db.undoLog(0, 1)[0]["id"]
    db.undo(undone)
    commit("admin", "Undo the change", undone=True)

    # Undo of an object creation: the object has no data afterwards.
    root["temporary"] = Document("tmp", "short-lived")
    commit("user2", "Create a temporary object")
    db.undo(db.undoLog(0, 1)[0]["id"])
    commit("admin", "Undo the creation")

    # Deletions with the storage API (what GC tools such as zc.zodbdgc do).
    victims = [Document("orphan %d" % i, "x" * i) for i in range(3)]
    root["orphans"] = victims
    commit("user3", "Objects soon orphaned")
    oids = [v._p_oid for v in victims]
    del root["orphans"]
    commit("user3", "Orphan them")
    conn.close()
    txn = TransactionMetaData(b"gc", b"Delete orphans")
    storage.tpc_begin(txn)
    for oid in oids:
        serial = storage.load(oid)[1]
        storage.deleteObject(oid, serial, txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)

    conn = db.open()
    conn.root()["settings"]["done"] = True
    commit("admin", "Last transaction")
    conn.close()
    db.close()
    for suffix in (".index", ".lock", ".tmp"):
        if os.path.exists(args.output + suffix):
            os.remove(args.output + suffix)


if __name__ == "__main__":
    main()
