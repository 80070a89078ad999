"""neobench's NEO/py side: runs neobench's workload with NEO/py's own client.

neobench writes this file to a temporary directory and runs it with the Python that has
NEO/py and ZODB (PYTHONPATH pointing at NEO/py's source), passing the settings as one JSON
argument; it prints one JSON object with the same keys as neobench's `--json` output.
It uses the storage API of `neo.client.Storage` directly (no ZODB.DB, no pickles), as
the Rust side uses `neo_client::Client`. Keep it in step with src/workload.rs.

Parallel phases use one process per client connection (started with "spawn", so that
no NEO/py client thread is forked), the way ZODB applications scale on CPython.
"""

import json
import multiprocessing
import sys
import time

ZERO = b"\0" * 8
POPULATE_BATCH = 1000


def open_storage(settings, cache_size=None):
    from neo.client.Storage import Storage
    options = {} if cache_size is None else {"cache_size": cache_size}
    return Storage(master_nodes=settings["master"], name=settings["cluster"],
                   **options)


def payload(oid, size):
    """Incompressible bytes that depend on the OID only (not the Rust side's bytes)."""
    import random
    return random.Random(oid).randbytes(size)


def commit(storage, stores, description):
    from ZODB.Connection import TransactionMetaData
    txn = TransactionMetaData(user="neobench", description=description)
    storage.tpc_begin(txn)
    try:
        for oid, serial, data in stores:
            storage.store(oid, serial, data, "", txn)
        storage.tpc_vote(txn)
    except BaseException:
        storage.tpc_abort(txn)
        raise
    return storage.tpc_finish(txn)


def percentiles(seconds):
    micros = sorted(s * 1e6 for s in seconds)
    if not micros:
        return float("nan"), float("nan")
    pick = lambda percent: micros[min(len(micros) * percent // 100, len(micros) - 1)]
    return pick(50), pick(99)


def shuffled(items, seed):
    """The items in a seeded random order."""
    import random
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


def timed_loads(storage, oids):
    latencies = []
    clock = time.perf_counter
    for oid in oids:
        start = clock()
        storage.load(oid)
        latencies.append(clock() - start)
    return latencies


def load_worker(settings, oids, index, count, barrier, results):
    storage = open_storage(settings, cache_size=0)
    storage.load(oids[0])  # connects to the master and a storage before the clock
    barrier.wait()
    start = time.perf_counter()
    deadline = start + settings["seconds"]
    done = 0
    position = index * len(oids) // count
    clock = time.perf_counter
    while clock() < deadline:
        storage.load(oids[position % len(oids)])
        position += 1
        done += 1
    results.put((done, time.perf_counter() - start, []))
    storage.close()


def commit_worker(settings, oid, barrier, results):
    storage = open_storage(settings)
    _, serial = storage.load(oid)
    barrier.wait()
    start = time.perf_counter()
    deadline = start + settings["seconds"]
    latencies = []
    rounds = 0
    clock = time.perf_counter
    base = payload(int.from_bytes(oid, "big"), settings["object_size"])
    while clock() < deadline:
        rounds += 1
        data = rounds.to_bytes(8, "big") + base[8:]
        begin = clock()
        serial = commit(storage, [(oid, serial, data)], "neobench")
        latencies.append(clock() - begin)
    results.put((rounds, time.perf_counter() - start, latencies))
    storage.close()


def parallel(target, arguments):
    """Runs one process per argument tuple; returns (operations, seconds, latencies)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(arguments))
    results = context.Queue()
    processes = [context.Process(target=target, args=args + (barrier, results))
                 for args in arguments]
    for process in processes:
        process.start()
    collected = [results.get() for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit("a worker failed with exit code %s" % process.exitcode)
    operations = sum(c[0] for c in collected)
    seconds = max(c[1] for c in collected)
    latencies = [l for c in collected for l in c[2]]
    return operations, seconds, latencies


def progress(message):
    sys.stderr.write("neobench (NEO/py): %s\n" % message)
    sys.stderr.flush()


def main():
    settings = json.loads(sys.argv[1])
    size = settings["object_size"]
    committers_max = max(settings["committers"] or [0])
    figures = {"label": "NEO/py"}

    progress("populating %d objects" % settings["objects"])
    writer = open_storage(settings)
    start = time.perf_counter()
    oids = [writer.new_oid() for _ in range(settings["objects"] + committers_max)]
    for i in range(0, len(oids), POPULATE_BATCH):
        batch = oids[i:i + POPULATE_BATCH]
        commit(writer, [(oid, ZERO, payload(int.from_bytes(oid, "big"), size))
                        for oid in batch], "neobench populate")
    figures["populate_s"] = time.perf_counter() - start
    writer.close()
    objects, committer_oids = oids[:settings["objects"]], oids[settings["objects"]:]

    progress("serial cold and warm loads")
    order = shuffled(objects, settings["seed"])
    sample, rest = order[:settings["serial_loads"]], order[settings["serial_loads"]:]
    reader = open_storage(settings)
    for oid in committer_oids + rest[:16]:
        reader.load(oid)
    figures["cold_p50_us"], figures["cold_p99_us"] = percentiles(
        timed_loads(reader, sample))
    figures["warm_p50_us"], figures["warm_p99_us"] = percentiles(
        timed_loads(reader, sample))
    for oid in sample:
        if reader.load(oid)[0] != payload(int.from_bytes(oid, "big"), size):
            raise SystemExit("%s loaded different data than stored" % oid.hex())
    reader.close()

    figures["loads"] = []
    for k in settings["connections"]:
        progress("parallel uncached loads, %d connection(s)" % k)
        operations, seconds, _ = parallel(
            load_worker, [(settings, objects, i, k) for i in range(k)])
        figures["loads"].append([k, operations / seconds])

    figures["commits"] = []
    for k in settings["committers"]:
        progress("durable one-object commits, %d committer(s)" % k)
        operations, seconds, latencies = parallel(
            commit_worker, [(settings, committer_oids[i]) for i in range(k)])
        p50, p99 = percentiles(latencies)
        figures["commits"].append({"committers": k, "p50_us": p50, "p99_us": p99,
                                   "per_s": operations / seconds})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
