//! A TCP relay between the clients and the broker, so that a test can take the broker off
//! the network and bring it back without touching its process: a network partition, as
//! opposed to the restart of `Stack::stop_broker`/`Stack::start_broker`. The broker
//! advertises the relay's address, so every client (the services, the tests' own consumers)
//! reaches it only through the relay. [`Relay::cut`]
//! closes the listening socket (new connections are refused) and shuts down every relayed
//! connection, which is what clients see when a broker stops; [`Relay::restore`] listens
//! again on the same port.
//!
//! Plain threads, not tasks: the relay must keep working whatever runtime the test uses.

use anyhow::{Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Relay {
    port: u16,
    target: u16,
    live: Mutex<Option<Live>>,
}

/// One listening period: the accept thread and the connections it relays.
struct Live {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays `127.0.0.1:port` to `127.0.0.1:target`, starting now.
    pub fn start(port: u16, target: u16) -> Result<Self> {
        let relay = Self {
            port,
            target,
            live: Mutex::new(None),
        };
        relay.restore()?;
        Ok(relay)
    }

    /// Stops listening and shuts down every relayed connection.
    pub fn cut(&self) {
        let Some(live) = self.live.lock().unwrap().take() else {
            return;
        };
        live.stop.store(true, Ordering::Relaxed);
        let _ = live.accept.join();
        for c in live.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port (a no-op while listening).
    pub fn restore(&self) -> Result<()> {
        let mut slot = self.live.lock().unwrap();
        if slot.is_some() {
            return Ok(());
        }
        // The port was just closed by `cut`; retry briefly in case the OS holds it.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).context(format!("relay: binding port {}", self.port)),
            }
        };
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, conns, target) = (stop.clone(), conns.clone(), self.target);
            std::thread::Builder::new()
                .name("relay-accept".into())
                .spawn(move || accept_loop(listener, target, &stop, &conns))?
        };
        *slot = Some(Live {
            stop,
            accept,
            conns,
        });
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn accept_loop(
    listener: TcpListener,
    target: u16,
    stop: &AtomicBool,
    conns: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        // A broker that does not answer looks to the client like a refused connection.
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            continue;
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let pair = (|| Some([client.try_clone().ok()?, server.try_clone().ok()?]))();
        let Some(pair) = pair else { continue };
        let mut registry = conns.lock().unwrap();
        // Keep the registry to open connections only.
        registry.retain(|c| c.peer_addr().is_ok());
        registry.extend(pair.iter().filter_map(|c| c.try_clone().ok()));
        drop(registry);
        let [c2, s2] = pair;
        std::thread::spawn(move || pump(client, server));
        std::thread::spawn(move || pump(s2, c2));
    }
}

/// Copies `from` to `to` until either side closes, then closes both directions.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
