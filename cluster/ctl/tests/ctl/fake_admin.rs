//! A stand-in admin node on 127.0.0.1 built on `neo-net`: it answers each request with
//! what the test's function says and records every packet it receives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use neo_net::{Event, Net, NetConfig};
use neo_protocol::Packet;

/// What the fake admin does with a request.
pub enum Reply {
    Answer(Packet),
    /// Answer, then close the connection (NEO/py does so after NOT_READY and
    /// PROTOCOL_ERROR).
    AnswerThenClose(Packet),
    /// Close without answering.
    Close,
    /// Nothing (notifications).
    Nothing,
}

pub struct FakeAdmin {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Packet>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAdmin {
    pub fn start(reply: impl Fn(&Packet) -> Reply + Send + 'static) -> FakeAdmin {
        let (net, events) = Net::new(NetConfig::default()).unwrap();
        let address = net.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut connections = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(event) = events.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    match event {
                        Event::Accepted { conn, .. } => {
                            connections.insert(conn.id(), conn);
                        }
                        Event::Packet {
                            conn,
                            msg_id,
                            packet,
                        } => {
                            requests.lock().unwrap().push(packet.clone());
                            let Some(handle) = connections.get(&conn) else {
                                continue;
                            };
                            match reply(&packet) {
                                Reply::Answer(answer) => {
                                    handle.answer(msg_id, answer).unwrap();
                                }
                                Reply::AnswerThenClose(answer) => {
                                    handle.answer(msg_id, answer).unwrap();
                                    handle.close();
                                }
                                Reply::Close => handle.close(),
                                Reply::Nothing => {}
                            }
                        }
                        Event::Closed { conn, .. } => {
                            connections.remove(&conn);
                        }
                        _ => {}
                    }
                }
                drop(connections);
                net.shutdown(Duration::from_secs(1));
            })
        };
        FakeAdmin {
            address,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Every packet received so far.
    pub fn requests(&self) -> Vec<Packet> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
