//! Operation: identification of clients and storages (1.4, with the id_timestamp delay),
//! client reads from the backend, and peers that send what they should not.

use neo_node::{Input, Output};
use neo_protocol::{
    AddObject, AnswerObject, AnswerObjectHistory, AnswerTIDs, AnswerTransactionInformation,
    AskObject, AskObjectHistory, AskStoreObject, AskTIDs, AskTransactionInformation, Bytes,
    CellState, Dict, ErrorCode, Nid, NodeInfo, NodeState, NodeType, NotifyNodeInformation, Oid,
    Packet, Ping, Pong, RequestIdentification, Tid, INVALID_PARTITION, ZERO_HASH,
};

use crate::harness::*;
use crate::initialisation::{data, prefilled, tid};

fn client(n: u32, id_timestamp: f64) -> NodeInfo {
    NodeInfo {
        node_type: NodeType::Client,
        address: None,
        nid: Some(Nid::new(NodeType::Client, n)),
        state: NodeState::Running,
        id_timestamp: Some(id_timestamp),
    }
}

fn identification(
    node_type: NodeType,
    nid: Option<Nid>,
    id_timestamp: Option<f64>,
) -> RequestIdentification {
    RequestIdentification {
        node_type,
        nid,
        address: None,
        cluster_name: Bytes::from_static(CLUSTER.as_bytes()),
        id_timestamp,
        extra: Dict::new(),
    }
}

/// S1 operating on the pre-filled database, partition 1 OUT_OF_DATE on it, client 1 known.
fn operating() -> Harness {
    let mut h = Harness::new(2001, prefilled());
    let s1 = storage_nid(1);
    let s2 = storage_nid(2);
    let nodes = [
        node(s1, 2001, NodeState::Running, 0.5),
        node(s2, 2002, NodeState::Running, 0.6),
        client(1, 0.9),
    ];
    let rows = vec![
        row(&[(s1, CellState::UpToDate), (s2, CellState::UpToDate)]),
        row(&[(s1, CellState::OutOfDate), (s2, CellState::UpToDate)]),
    ];
    h.boot(s1, &nodes, 1.0, &rows, 2);
    h
}

fn accept(h: &mut Harness, conn: u64) {
    let peer = format!("127.0.0.1:{}", 50000 + conn).parse().unwrap();
    assert!(h.feed(Input::Accepted { conn, peer }).is_empty());
}

fn single(outputs: &[Output]) -> Packet {
    match outputs {
        [Output::Send { packet, .. }] => packet.clone(),
        other => panic!("expected one packet, got {other:?}"),
    }
}

fn refused(outputs: &[Output], conn: u64, code: ErrorCode) -> String {
    match outputs {
        [Output::Send {
            conn: c,
            packet: Packet::Error(e),
            ..
        }, Output::Close { conn: closed }] => {
            assert_eq!((*c, *closed), (conn, conn));
            assert_eq!(e.code, code, "{e:?}");
            String::from_utf8_lossy(&e.message).into_owned()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A client identified on connection `conn`.
fn identified_client(h: &mut Harness, conn: u64) {
    accept(h, conn);
    let outputs = h.packet(
        conn,
        0,
        identification(
            NodeType::Client,
            Some(Nid::new(NodeType::Client, 1)),
            Some(0.9),
        ),
    );
    assert_eq!(
        single(&outputs),
        neo_protocol::AcceptIdentification {
            node_type: NodeType::Storage,
            nid: Some(storage_nid(1)),
            your_nid: Some(Nid::new(NodeType::Client, 1)),
        }
        .into()
    );
}

#[test]
fn clients_known_by_the_master_are_accepted() {
    let mut h = operating();
    identified_client(&mut h, 5);
}

#[test]
fn identification_newer_than_the_last_notification_is_delayed() {
    let mut h = operating();
    accept(&mut h, 6);
    let c2 = Nid::new(NodeType::Client, 2);
    let outputs = h.packet(6, 0, identification(NodeType::Client, Some(c2), Some(5.0)));
    assert!(outputs.is_empty(), "delayed, not refused: {outputs:?}");
    let outputs = h.master_sends(NotifyNodeInformation {
        timestamp: 5.5,
        node_list: vec![client(2, 5.0)],
    });
    assert_eq!(
        sent_on(&outputs, 6),
        vec![(
            0,
            neo_protocol::AcceptIdentification {
                node_type: NodeType::Storage,
                nid: Some(storage_nid(1)),
                your_nid: Some(c2)
            }
            .into()
        )]
    );
}

#[test]
fn identification_refusals() {
    let mut h = operating();
    // Older than the last notification and unknown: the peer lost the master.
    accept(&mut h, 7);
    let outputs = h.packet(
        7,
        0,
        identification(
            NodeType::Client,
            Some(Nid::new(NodeType::Client, 3)),
            Some(0.5),
        ),
    );
    assert_eq!(
        refused(&outputs, 7, ErrorCode::NotReady),
        "unknown by master"
    );
    // Another cluster.
    accept(&mut h, 8);
    let mut request = identification(
        NodeType::Client,
        Some(Nid::new(NodeType::Client, 1)),
        Some(0.9),
    );
    request.cluster_name = Bytes::from_static(b"other");
    assert_eq!(
        refused(&h.packet(8, 0, request), 8, ErrorCode::ProtocolError),
        "invalid cluster name"
    );
    // Anonymous clients are not allowed; anonymous storages are (backup replication).
    accept(&mut h, 9);
    let outputs = h.packet(9, 0, identification(NodeType::Client, None, None));
    assert_eq!(
        refused(&outputs, 9, ErrorCode::ProtocolError),
        "reject anonymous non-storage node"
    );
    accept(&mut h, 10);
    let outputs = h.packet(10, 0, identification(NodeType::Storage, None, None));
    assert!(
        matches!(single(&outputs), Packet::AcceptIdentification(a) if a.nid.is_none() && a.your_nid.is_none())
    );
    // Admins do not talk to storages.
    accept(&mut h, 11);
    let admin = Nid::new(NodeType::Admin, 1);
    let outputs = h.packet(
        11,
        0,
        identification(NodeType::Admin, Some(admin), Some(0.9)),
    );
    assert_eq!(
        refused(&outputs, 11, ErrorCode::NotReady),
        "unknown by master"
    );
    // The storage keeps working.
    assert_eq!(h.storage.phase(), neo_storage::Phase::Operation);
}

#[test]
fn nothing_is_accepted_before_operation() {
    let mut h = Harness::new(2001, prefilled());
    h.identify(storage_nid(1));
    accept(&mut h, 5);
    let outputs = h.packet(
        5,
        0,
        identification(
            NodeType::Client,
            Some(Nid::new(NodeType::Client, 1)),
            Some(0.9),
        ),
    );
    assert_eq!(refused(&outputs, 5, ErrorCode::NotReady), "Retry Later");
}

#[test]
fn client_reads_are_answered_from_the_backend() {
    let mut h = operating();
    identified_client(&mut h, 5);
    // Oid 2 lives in partition 0 (readable); its only revision is tid(2).
    let current = single(&h.packet(
        5,
        1,
        AskObject {
            oid: Oid(2),
            at: None,
            before: None,
        },
    ));
    let value = data("value 2");
    let expected = AnswerObject {
        oid: Oid(2),
        serial: tid(2),
        next_serial: None,
        compression: Some(0),
        checksum: value.checksum,
        data: value.value.clone(),
        data_serial: None,
    };
    assert_eq!(current, expected.clone().into());
    let exact = single(&h.packet(
        5,
        2,
        AskObject {
            oid: Oid(2),
            at: Some(tid(2)),
            before: None,
        },
    ));
    assert_eq!(exact, expected.into());
    let before = single(&h.packet(
        5,
        3,
        AskObject {
            oid: Oid(2),
            at: None,
            before: Some(tid(2)),
        },
    ));
    assert!(matches!(before, Packet::Error(e) if e.code == ErrorCode::OidNotFound));
    let missing = single(&h.packet(
        5,
        4,
        AskObject {
            oid: Oid(20),
            at: None,
            before: None,
        },
    ));
    assert!(matches!(missing, Packet::Error(e) if e.code == ErrorCode::OidDoesNotExist));
    // Oid 3 is in partition 1, OUT_OF_DATE here.
    let unreadable = single(&h.packet(
        5,
        5,
        AskObject {
            oid: Oid(3),
            at: None,
            before: None,
        },
    ));
    assert!(matches!(unreadable, Packet::Error(e) if e.code == ErrorCode::NonReadableCell));
    // Newest first, readable partitions only (even TIDs: partition 0).
    let tids = single(&h.packet(
        5,
        6,
        AskTIDs {
            first: 1,
            last: 3,
            partition: INVALID_PARTITION,
        },
    ));
    assert_eq!(
        tids,
        AnswerTIDs {
            tid_list: vec![tid(8), tid(6)]
        }
        .into()
    );
    let info = single(&h.packet(5, 7, AskTransactionInformation { tid: tid(4) }));
    assert_eq!(
        info,
        AnswerTransactionInformation {
            tid: tid(4),
            user: "user".into(),
            description: format!("txn {}", tid(4)).into(),
            extension: Bytes::new(),
            packed: false,
            oid_list: vec![Oid(4)],
        }
        .into()
    );
    let history = single(&h.packet(
        5,
        8,
        AskObjectHistory {
            oid: Oid(2),
            first: 0,
            last: 10,
        },
    ));
    assert_eq!(
        history,
        AnswerObjectHistory {
            oid: Oid(2),
            history_list: vec![(tid(2), value.value.len() as u64)]
        }
        .into()
    );
    assert_eq!(single(&h.packet(5, 9, Ping {})), Pong {}.into());
    let _ = Tid(0);
}

#[test]
fn unexpected_packets_close_only_their_connection() {
    let mut h = operating();
    // A request before identification.
    accept(&mut h, 5);
    let outputs = h.packet(
        5,
        0,
        AskObject {
            oid: Oid(2),
            at: None,
            before: None,
        },
    );
    let message = refused(&outputs, 5, ErrorCode::ProtocolError);
    assert!(message.contains("AskObject"), "{message}");
    // A replication packet from a client.
    identified_client(&mut h, 6);
    let outputs = h.packet(
        6,
        1,
        AddObject {
            oid: Oid(1),
            serial: tid(1),
            compression: 0,
            checksum: ZERO_HASH,
            data: Bytes::new(),
            data_serial: None,
        },
    );
    refused(&outputs, 6, ErrorCode::ProtocolError);
    // A store whose data does not match its checksum.
    identified_client(&mut h, 7);
    let outputs = h.packet(
        7,
        1,
        AskStoreObject {
            oid: Oid(2),
            serial: tid(2),
            compression: 0,
            checksum: ZERO_HASH,
            data: Bytes::from_static(b"not empty"),
            data_serial: None,
            ttid: tid(20),
        },
    );
    assert_eq!(
        refused(&outputs, 7, ErrorCode::ProtocolError),
        "invalid checksum"
    );
    // Nonsense offsets.
    identified_client(&mut h, 8);
    let outputs = h.packet(
        8,
        1,
        AskTIDs {
            first: 5,
            last: 5,
            partition: 0,
        },
    );
    assert_eq!(
        refused(&outputs, 8, ErrorCode::ProtocolError),
        "invalid offsets"
    );
    // The node and its master connection are unaffected.
    assert_eq!(h.storage.phase(), neo_storage::Phase::Operation);
    identified_client(&mut h, 9);
    // A packet on a connection the node never heard of is ignored.
    assert!(h.packet(99, 0, Ping {}).is_empty());
}
