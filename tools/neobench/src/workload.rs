//! The workload run by the Rust client (`neo_client::Client`): populate, serial cold and
//! warm loads, parallel uncached loads, durable one-object commits. `neopy_bench.py` runs
//! the same steps with NEO/py's client; keep the two in step.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use neo_client::{Client, ClientConfig, TransactionMeta, Vote};
use neo_protocol::{Bytes, Oid, Tid};

use crate::cluster::CpuMeter;
use crate::figures::{Commits, Figures, Latency};

/// What to run; the same settings are handed to the NEO/py script.
#[derive(Debug, Clone)]
pub struct Workload {
    pub objects: usize,
    pub object_size: usize,
    /// How many objects the serial cold and warm passes load.
    pub serial_loads: usize,
    /// Length of each parallel load and commit phase.
    pub seconds: f64,
    pub connections: Vec<usize>,
    pub committers: Vec<usize>,
    pub seed: u64,
    /// Whether the Rust client may spin for answers (`ClientConfig::spin`).
    pub spin: bool,
}

/// Objects stored per populating transaction.
const POPULATE_BATCH: usize = 1000;

/// Runs the workload against the cluster `name` at `master`. `meter` (our own cluster)
/// adds CPU figures per workload.
pub fn run(
    label: &str,
    master: &str,
    name: &str,
    workload: &Workload,
    meter: Option<&CpuMeter>,
    progress: &dyn Fn(&str),
) -> Result<Figures> {
    let config = |cache_size: Option<usize>| {
        let mut config = ClientConfig::new(vec![master.to_owned()], name);
        config.spin = workload.spin;
        if let Some(size) = cache_size {
            config.cache_size = size;
        }
        config
    };
    let connect = |cache_size: Option<usize>| {
        Client::connect(config(cache_size))
            .with_context(|| format!("connecting to cluster {name} at {master}"))
    };
    let mut figures = Figures {
        label: label.to_owned(),
        ..Figures::default()
    };
    let committers_max = workload.committers.iter().copied().max().unwrap_or(0);

    progress(&format!("populating {} objects", workload.objects));
    let writer = connect(None)?;
    let start = Instant::now();
    let mut oids = Vec::with_capacity(workload.objects + committers_max);
    for _ in 0..workload.objects + committers_max {
        oids.push(writer.new_oid().context("allocating an OID")?);
    }
    for batch in oids.chunks(POPULATE_BATCH) {
        let stores: Vec<(Oid, Tid, Bytes)> = batch
            .iter()
            .map(|&oid| (oid, Tid::ZERO, payload(oid, workload.object_size)))
            .collect();
        commit(&writer, &stores, "neobench populate")?;
    }
    figures.populate_seconds = start.elapsed().as_secs_f64();
    writer.close();
    let (objects, committer_oids) = oids.split_at(workload.objects);

    progress("serial cold and warm loads");
    let order = shuffled(objects, objects.len(), workload.seed);
    let (sample, rest) = order.split_at(workload.serial_loads.min(order.len()));
    let reader = connect(None)?;
    // Opens the links to the storages outside the timed loads, with objects out of the
    // sample (which must stay cold).
    for &oid in committer_oids.iter().chain(rest.iter().take(16)) {
        reader.load(oid).context("warming up the storage links")?;
    }
    let before = meter.map(CpuMeter::sample);
    let stats = reader.cache_stats()?;
    let cold = timed_loads(&reader, sample)?;
    if let (Some(meter), Some(before)) = (meter, before) {
        let per_op = meter.per_operation(&before, &meter.sample(), sample.len() as u64);
        figures.cpu.push(("cold load".into(), per_op));
    }
    // The figures must mean what they say: every cold load asked a storage, every warm
    // load was a cache hit.
    let after_cold = reader.cache_stats()?;
    let (hits, misses) = (
        after_cold.hits - stats.hits,
        after_cold.misses - stats.misses,
    );
    if hits != 0 || misses != sample.len() as u64 {
        bail!("cold loads were not all cache misses ({hits} hits, {misses} misses)");
    }
    figures.cold = Latency::of(&cold);
    figures.warm = Latency::of(&timed_loads(&reader, sample)?);
    let after_warm = reader.cache_stats()?;
    let (hits, misses) = (
        after_warm.hits - after_cold.hits,
        after_warm.misses - after_cold.misses,
    );
    if misses != 0 || hits != sample.len() as u64 {
        bail!("warm loads were not all cache hits ({hits} hits, {misses} misses)");
    }
    for &oid in sample {
        let (data, _) = reader.load(oid)?;
        if data != payload(oid, workload.object_size) {
            bail!("{oid} loaded different data than stored");
        }
    }
    reader.close();

    for &k in &workload.connections {
        progress(&format!("parallel uncached loads, {k} connection(s)"));
        // A cache of 0 bytes keeps nothing, so every load asks a storage.
        let clients = (0..k)
            .map(|_| connect(Some(0)))
            .collect::<Result<Vec<_>>>()?;
        let before = meter.map(CpuMeter::sample);
        let (count, elapsed, _) = parallel(&clients, workload.seconds, |i, client, deadline| {
            let mut count = 0u64;
            let mut next = i * objects.len() / k;
            while Instant::now() < deadline {
                client.load(objects[next % objects.len()])?;
                next += 1;
                count += 1;
            }
            Ok((count, Vec::new()))
        })?;
        if let (Some(meter), Some(before)) = (meter, before) {
            let per_op = meter.per_operation(&before, &meter.sample(), count);
            figures.cpu.push((format!("load, {k} conn"), per_op));
        }
        figures.loads.push((k, count as f64 / elapsed));
        for client in clients {
            let stats = client.cache_stats()?;
            if stats.hits != 0 {
                bail!("uncached loads hit the cache {} times", stats.hits);
            }
            client.close();
        }
    }

    for &k in &workload.committers {
        progress(&format!("durable one-object commits, {k} committer(s)"));
        let clients = (0..k).map(|_| connect(None)).collect::<Result<Vec<_>>>()?;
        let before = meter.map(CpuMeter::sample);
        let (count, elapsed, latencies) =
            parallel(&clients, workload.seconds, |i, client, deadline| {
                let oid = committer_oids[i];
                let (_, mut serial) = client.load(oid)?;
                let mut latencies = Vec::new();
                let mut round = 0u64;
                while Instant::now() < deadline {
                    round += 1;
                    let mut data = payload(oid, workload.object_size).to_vec();
                    data[..8].copy_from_slice(&round.to_be_bytes());
                    let start = Instant::now();
                    serial = commit(client, &[(oid, serial, Bytes::from(data))], "neobench")?;
                    latencies.push(start.elapsed());
                }
                Ok((round, latencies))
            })?;
        if let (Some(meter), Some(before)) = (meter, before) {
            let per_op = meter.per_operation(&before, &meter.sample(), count);
            figures
                .cpu
                .push((format!("commit, {k} committer(s)"), per_op));
        }
        figures.commits.push((
            k,
            Commits {
                latency: Latency::of(&latencies),
                per_second: count as f64 / elapsed,
            },
        ));
        for client in clients {
            client.close();
        }
    }
    Ok(figures)
}

/// Commits `stores` in one transaction; a conflict is a failure (nobody else writes
/// these objects).
fn commit(client: &Client, stores: &[(Oid, Tid, Bytes)], description: &str) -> Result<Tid> {
    let meta = TransactionMeta {
        user: Bytes::from_static(b"neobench"),
        description: Bytes::from(description.to_owned()),
        extension: Bytes::new(),
    };
    let ttid = client.tpc_begin(None, meta).context("tpc_begin")?;
    for (oid, serial, data) in stores {
        client
            .store(ttid, *oid, *serial, data.clone())
            .context("store")?;
    }
    match client.tpc_vote(ttid).context("tpc_vote")? {
        Vote::Voted(_) => {}
        Vote::Conflicts(conflicts) => {
            let _ = client.tpc_abort(ttid);
            bail!("unexpected conflicts: {conflicts:?}");
        }
    }
    client.tpc_finish(ttid).context("tpc_finish")
}

fn timed_loads(client: &Client, oids: &[Oid]) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(oids.len());
    for &oid in oids {
        let start = Instant::now();
        client.load(oid).with_context(|| format!("loading {oid}"))?;
        latencies.push(start.elapsed());
    }
    Ok(latencies)
}

/// Runs `work(index, client, deadline)` on one thread per client, all starting together;
/// returns the operations counted, the longest elapsed time and every latency.
fn parallel<F>(clients: &[Client], seconds: f64, work: F) -> Result<(u64, f64, Vec<Duration>)>
where
    F: Fn(usize, &Client, Instant) -> Result<(u64, Vec<Duration>)> + Sync,
{
    let barrier = Barrier::new(clients.len());
    let results: Vec<Result<(u64, f64, Vec<Duration>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let barrier = &barrier;
                let work = &work;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + Duration::from_secs_f64(seconds);
                    let (count, latencies) = work(i, client, deadline)?;
                    Ok((count, start.elapsed().as_secs_f64(), latencies))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a worker thread panicked"))
            })
            .collect()
    });
    let mut total = 0;
    let mut longest: f64 = 0.0;
    let mut all = Vec::new();
    for result in results {
        let (count, elapsed, latencies) = result?;
        total += count;
        longest = longest.max(elapsed);
        all.extend(latencies);
    }
    Ok((total, longest, all))
}

/// Incompressible bytes that depend on the OID only, so loads can be checked.
fn payload(oid: Oid, size: usize) -> Bytes {
    let mut state = oid.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    Bytes::from(data)
}

/// The first `count` of `oids` in a seeded random order (loads do not follow the order
/// of creation, which would favour the storage's B-tree pages).
fn shuffled(oids: &[Oid], count: usize, seed: u64) -> Vec<Oid> {
    let mut order = oids.to_vec();
    let mut state = seed | 1;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order.truncate(count);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_depend_on_the_oid_and_have_the_size() {
        assert_eq!(payload(Oid(1), 100).len(), 100);
        assert_ne!(payload(Oid(1), 100), payload(Oid(2), 100));
        assert_eq!(payload(Oid(3), 9), payload(Oid(3), 9));
    }

    #[test]
    fn shuffle_keeps_distinct_oids() {
        let oids: Vec<Oid> = (0..50).map(Oid).collect();
        let mut sample = shuffled(&oids, 20, 7);
        assert_eq!(sample.len(), 20);
        assert_ne!(sample, oids[..20].to_vec());
        sample.sort();
        sample.dedup();
        assert_eq!(sample.len(), 20);
    }
}
