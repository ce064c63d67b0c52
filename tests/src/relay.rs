//! A TCP relay that can be paused: a network partition between one process
//! and a server (Redis), with the server itself untouched. While paused,
//! bytes stop flowing both ways on every connection, and new connections
//! hang, as they would behind a dropped route.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay to one target.
#[derive(Debug)]
pub struct Relay {
    /// `127.0.0.1:PORT` to connect to instead of the target.
    pub addr: String,
    paused: Arc<watch::Sender<bool>>,
    target: Arc<std::sync::Mutex<String>>,
}

impl Relay {
    /// Relays connections on a free port to `target` (`host:port`).
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let paused = Arc::new(watch::Sender::new(false));
        let target = Arc::new(std::sync::Mutex::new(target.to_owned()));
        let (state, current) = (paused.clone(), target.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (target, mut gate) = (current.lock().unwrap().clone(), state.subscribe());
                tokio::spawn(async move {
                    // A connection made while paused waits, like a SYN into a void.
                    let _ = gate.wait_for(|paused| !*paused).await;
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, gate.clone()), pipe(sr, cw, gate));
                });
            }
        });
        Relay { addr, paused, target }
    }

    /// Sends new connections to `target` from now on (a Service following a
    /// promoted primary); existing ones stay where they are.
    pub fn retarget(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_owned();
    }

    /// Stops bytes from flowing (connections stay open).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Lets bytes flow again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|paused| !*paused).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
