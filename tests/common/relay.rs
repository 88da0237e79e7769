//! A UDP relay between two nodes that can cut their link: the real network separation
//! of partition tests. A node dials its peer through the relay; while the relay is
//! blocked, every datagram in either direction is dropped, exactly like a cable pulled
//! out (QUIC sees silence, not an error).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One direction of dialling: clients reach `addr`, the relay forwards to the target.
pub struct Relay {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying datagrams from a fresh loopback port to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay bind"));
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
        {
            let (front, blocked, stop) = (front.clone(), blocked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, client)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    if blocked.load(Ordering::Relaxed) {
                        continue;
                    }
                    let upstream = {
                        let mut map = upstreams.lock().unwrap();
                        map.entry(client)
                            .or_insert_with(|| {
                                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                                up.connect(target).unwrap();
                                up.set_read_timeout(Some(Duration::from_millis(50)))
                                    .unwrap();
                                spawn_return_path(
                                    up.clone(),
                                    front.clone(),
                                    client,
                                    blocked.clone(),
                                    stop.clone(),
                                );
                                up
                            })
                            .clone()
                    };
                    let _ = upstream.send(&buf[..n]);
                }
            });
        }
        Relay {
            addr,
            blocked,
            stop,
        }
    }

    /// Cuts (true) or restores (false) the link.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
    }
}

/// Replies from the target go back to the client that dialled.
fn spawn_return_path(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = up.recv(&mut buf) else {
                continue;
            };
            if !blocked.load(Ordering::Relaxed) {
                let _ = front.send_to(&buf[..n], client);
            }
        }
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
