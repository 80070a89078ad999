//! Start-up and the bootstrap loop: cluster name, identification packet, redirections,
//! retry delays, NID storage.

use neo_node::{Input, Node, Output};
use neo_protocol::{
    AcceptIdentification, Bytes, ErrorCode, NodeType, NotPrimaryMaster, Packet, Value,
};
use neo_storage::{Backend, MemoryBackend, MemoryDisk, Phase, StartError, Storage};

use crate::harness::*;

#[test]
fn cluster_name_is_stored_then_checked() {
    let disk = MemoryDisk::new();
    drop(Harness::new(2001, disk.clone()));
    let mut other = config(2001);
    other.cluster = "other".into();
    let backend = MemoryBackend::open(disk).unwrap();
    match Storage::new(other, backend) {
        Err(e @ StartError::NameMismatch { .. }) => assert_eq!(
            e.to_string(),
            "name 'other' does not match with the database: 'test'"
        ),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a database of another cluster was accepted"),
    }
}

#[test]
fn identification_packet_and_nid_storage() {
    let disk = MemoryDisk::new();
    let mut h = Harness::new(2001, disk.clone());
    let sent = h.identify(storage_nid(3));
    let Output::Send {
        packet: Packet::RequestIdentification(request),
        ..
    } = &sent[0]
    else {
        panic!("{sent:?}");
    };
    assert_eq!(request.node_type, NodeType::Storage);
    assert_eq!(request.nid, None, "a new storage has no NID yet");
    assert_eq!(request.address, Some(address(2001)));
    assert_eq!(request.cluster_name.as_ref(), CLUSTER.as_bytes());
    assert_eq!(request.id_timestamp, None);
    assert_eq!(
        request.extra.0,
        vec![(
            Bytes::from_static(b"devpath"),
            Value::Array(vec![
                Value::Bin(Bytes::from_static(b"host")),
                Value::Bin(Bytes::from_static(b"2049"))
            ])
        )]
    );
    assert_eq!(h.storage.phase(), Phase::Initialisation);
    assert_eq!(h.storage.nid(), Some(storage_nid(3)));
    // The NID is committed: a restart proposes it.
    drop(h);
    assert_eq!(
        MemoryBackend::open(disk.clone()).unwrap().nid().unwrap(),
        Some(storage_nid(3))
    );
    let mut h = Harness::new(2001, disk);
    let sent = h.identify(storage_nid(3));
    let Output::Send {
        packet: Packet::RequestIdentification(request),
        ..
    } = &sent[0]
    else {
        panic!("{sent:?}");
    };
    assert_eq!(request.nid, Some(storage_nid(3)));
}

#[test]
fn retries_are_a_second_apart_and_follow_redirections() {
    let mut cfg = config(2001);
    let second = address(1001);
    cfg.masters.push(second.clone());
    let mut storage = Storage::new(cfg, MemoryBackend::new()).unwrap();
    let mut out = neo_node::Outbox::new();
    let mut feed = |storage: &mut Storage<MemoryBackend>, now: f64, input: Input| {
        storage.handle(now, input, &mut out);
        out.drain().collect::<Vec<_>>()
    };
    let first = feed(&mut storage, 10.0, Input::Start);
    let [Output::Connect { conn, addr }] = first.as_slice() else {
        panic!("{first:?}")
    };
    assert_eq!(*addr, master_address());
    // The first master is a secondary: it names the second as primary.
    let sent = feed(&mut storage, 10.0, Input::Connected { conn: *conn });
    assert!(matches!(sent[0], Output::Send { .. }));
    let redirected = feed(
        &mut storage,
        10.0,
        Input::Packet {
            conn: *conn,
            msg_id: 0,
            packet: NotPrimaryMaster {
                primary: Some(1),
                known_master_list: vec![master_address(), second.clone()],
            }
            .into(),
        },
    );
    let [Output::Close { conn: closed }, Output::Connect { conn, addr }] = redirected.as_slice()
    else {
        panic!("{redirected:?}")
    };
    assert_eq!(closed, &(neo_node::io::OUTGOING | 1));
    assert_eq!(*addr, second);
    // The primary is not ready: the next attempt to it waits a second.
    feed(&mut storage, 10.5, Input::Connected { conn: *conn });
    let refused = feed(
        &mut storage,
        10.5,
        Input::Answer {
            conn: *conn,
            msg_id: 0,
            packet: Packet::error(ErrorCode::NotReady, "not ready"),
        },
    );
    // Round robin goes back to the first master, tried 0.5 s ago: wait.
    assert!(
        matches!(refused.as_slice(), [Output::Close { .. }]),
        "{refused:?}"
    );
    assert_eq!(storage.deadline(), Some(11.0));
    let early = feed(&mut storage, 10.9, Input::Timer);
    assert!(early.is_empty(), "{early:?}");
    let retry = feed(&mut storage, 11.0, Input::Timer);
    assert!(
        matches!(retry.as_slice(), [Output::Connect { addr, .. }] if *addr == master_address()),
        "{retry:?}"
    );
    assert_eq!(storage.deadline(), None);
    // A failed connection goes on round robin to the second master, last tried at 10.0:
    // at once.
    let Output::Connect { conn, .. } = retry[0].clone() else {
        unreachable!()
    };
    let failed = feed(&mut storage, 11.0, Input::ConnectFailed { conn });
    assert!(
        matches!(failed.as_slice(), [Output::Connect { addr, .. }] if *addr == second),
        "{failed:?}"
    );
    // And failing again, back to the first, tried at 11.0: at 12.0.
    let Output::Connect { conn, .. } = failed[0].clone() else {
        unreachable!()
    };
    assert!(feed(&mut storage, 11.2, Input::ConnectFailed { conn }).is_empty());
    assert_eq!(storage.deadline(), Some(12.0));
}

#[test]
fn a_non_master_answer_is_not_taken_for_the_primary() {
    let mut h = Harness::new(2001, MemoryDisk::new());
    let outputs = h.feed(Input::Start);
    let Output::Connect { conn, .. } = outputs[0].clone() else {
        panic!()
    };
    h.feed(Input::Connected { conn });
    let outputs = h.packet(
        conn,
        0,
        AcceptIdentification {
            node_type: NodeType::Storage,
            nid: Some(storage_nid(9)),
            your_nid: Some(storage_nid(1)),
        },
    );
    assert!(matches!(outputs[0], Output::Close { .. }), "{outputs:?}");
    assert_eq!(h.storage.phase(), Phase::Bootstrap);
    assert_eq!(h.storage.nid(), None);
}
