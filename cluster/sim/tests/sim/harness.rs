//! The harness with real masters only: connections, timers, kills and partitions behave
//! as the scenarios assume.

use neo_master::Master;
use neo_protocol::ClusterState;
use neo_sim::{Cluster, Spec, Status};

fn masters_only(seed: u64, masters: usize) -> Cluster {
    Cluster::new(
        seed,
        Spec {
            masters,
            storages: 0,
            admins: 0,
            ..Spec::default()
        },
    )
}

fn primaries(cluster: &Cluster) -> Vec<usize> {
    cluster
        .masters
        .iter()
        .filter(|id| {
            cluster
                .world
                .get::<Master>(**id)
                .is_some_and(|m| m.is_primary())
        })
        .map(|id| id.0)
        .collect()
}

#[test]
fn lone_master_recovers_and_waits() {
    let mut cluster = masters_only(1, 1);
    cluster.world.run_for(30.0);
    let master = cluster.master(cluster.masters[0]);
    assert!(master.is_primary());
    assert_eq!(master.cluster_state(), ClusterState::Recovering);
    assert!(master.nid().is_some());
    // It polls once a second and nothing else happens: a bounded number of events.
    assert!(
        cluster.world.events_processed() < 100,
        "{}",
        cluster.world.events_processed()
    );
    cluster.world.assert_no_violations();
}

#[test]
fn three_masters_elect_one_primary() {
    for seed in 0..20 {
        let mut cluster = masters_only(seed, 3);
        let elected = cluster.run_until(|c| primaries(c).len() == 1, 30.0);
        assert!(
            elected,
            "seed {seed}: primaries {:?}\n{}",
            primaries(&cluster),
            cluster.world.trace().join("\n")
        );
        // The election is stable: it stays one primary, the others follow it.
        cluster.world.run_for(20.0);
        assert_eq!(primaries(&cluster).len(), 1, "seed {seed}");
        let primary = cluster
            .world
            .address(cluster.masters[primaries(&cluster)[0]]);
        for id in &cluster.masters {
            let master = cluster.master(*id);
            assert_eq!(master.primary_address(), Some(&primary), "seed {seed}");
        }
        cluster.world.assert_no_violations();
    }
}

#[test]
fn killed_primary_is_replaced_by_a_spare() {
    let mut cluster = masters_only(7, 3);
    assert!(cluster.run_until(|c| primaries(c).len() == 1, 30.0));
    cluster.world.run_for(5.0);
    let old = cluster.masters[primaries(&cluster)[0]];
    cluster.world.kill(old);
    assert_eq!(*cluster.world.status(old), Status::Down);
    let replaced = cluster.run_until(
        |c| {
            let p = primaries(c);
            p.len() == 1 && c.masters[p[0]] != old
        },
        30.0,
    );
    assert!(replaced, "{}", cluster.world.trace().join("\n"));
    // Restarted later, the old primary has a newer election key: it joins as a secondary.
    cluster.world.run_for(10.0);
    cluster.world.restart(old);
    cluster.world.run_for(20.0);
    assert_eq!(primaries(&cluster).len(), 1);
    assert!(
        !cluster.master(old).is_primary(),
        "{}",
        cluster.world.trace().join("\n")
    );
    cluster.world.assert_no_violations();
}

#[test]
fn partitioned_master_cannot_reach_peers() {
    let mut cluster = masters_only(3, 2);
    let (a, b) = (cluster.masters[0], cluster.masters[1]);
    cluster.world.partition(&[a], &[b]);
    cluster.world.run_for(10.0);
    // Cut off from each other, both play the primary role in RECOVERING.
    assert_eq!(primaries(&cluster).len(), 2);
    cluster.world.heal();
    assert!(cluster.run_until(|c| primaries(c).len() == 1, 30.0));
    cluster.world.assert_no_violations();
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut cluster = masters_only(seed, 3);
        cluster.world.run_for(15.0);
        (
            cluster.world.events_processed(),
            cluster.world.trace().to_vec(),
        )
    };
    assert_eq!(run(42), run(42));
}
