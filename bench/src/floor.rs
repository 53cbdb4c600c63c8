//! The floor: the least a broadcast over one TCP connection per user can
//! cost on this machine, measured the same way as a chat server.
//!
//! `chat-bench floor-writer` is a process that does nothing but relay: it
//! answers `NAME x` with `WELCOME x` and `PING t` with `PONG t`, and writes
//! each `MSG <text>` as `MSG <name> <text>` to every logged-in socket. No
//! parsing beyond the verb, no names list, no per-user queue: one `write`
//! per socket per pass, a backlog only for a socket that is full.
//!
//! It uses every core, as a server would: one thread per core, each with
//! its own listener on the same port (`SO_REUSEPORT`: the kernel spreads the
//! connections) and its own share of the sockets. The messages one read
//! brings go out as one batch; a batch is handed to every thread under one
//! lock, so every socket gets the batches in the same order (one total
//! order, as the workers check), and a thread writes everything it has
//! pending to each of its sockets with one `write`.
//!
//! The workers log in, hold the barrier, and stamp and check messages
//! exactly as against a chat server, so the floor's `fanout` and `latency`
//! figures are what a server that costs nothing of its own would get, and a
//! chat server's figures divided by them say what the server adds.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Bytes read from a connection at once, into one buffer per thread.
const SCRATCH: usize = 64 * 1024;
/// Connections that may wait to be accepted, per thread.
const LISTEN_BACKLOG: u32 = 4096;

/// A batch of frames, the same for every socket.
type Batch = Arc<[u8]>;

/// Where batches go: one channel per thread, fed under one lock.
struct Hub {
    threads: Mutex<Vec<mpsc::UnboundedSender<Batch>>>,
}

impl Hub {
    fn broadcast(&self, batch: Batch) {
        // Poisoned only if a thread panicked while holding it: keep going.
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for thread in threads.iter() {
            let _ = thread.send(batch.clone());
        }
    }
}

/// Listens on `addr` (port 0: any) with `threads` threads (0: one per
/// core), says `listening on <addr>` on stdout like `chat-server`, and
/// relays until killed.
pub fn main(addr: &str, threads: usize) -> io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    // The sockets are bound here, so that the address is known (port 0
    // becomes a port) and every thread's listener takes the same one; a
    // runtime only for that, since tokio makes listeners in one.
    let binder = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let entered = binder.enter();
    let mut sockets = Vec::new();
    for _ in 0..threads {
        let socket = bind(addr)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    drop(entered);
    drop(binder);
    let mut inboxes = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        inboxes.push(rx);
    }
    let hub = Arc::new(Hub {
        threads: Mutex::new(senders),
    });
    let mut handles = Vec::new();
    for (socket, inbox) in sockets.into_iter().zip(inboxes) {
        let hub = hub.clone();
        handles.push(std::thread::spawn(move || shard(socket, inbox, hub)));
    }
    println!("listening on {addr}");
    for handle in handles {
        match handle.join() {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::other("a floor thread panicked")),
        }
    }
    Ok(())
}

/// A listening socket on `addr` that others may share.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    listener.into_std()
}

/// One thread: its listener, its sockets, its share of every batch.
fn shard(
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Batch>,
    hub: Arc<Hub>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let shard = Rc::new(Shard {
            hub,
            members: RefCell::new(Vec::new()),
            next_id: Cell::new(0),
            scratch: RefCell::new(vec![0; SCRATCH]),
        });
        tokio::task::spawn_local(shard.clone().deliver(inbox));
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(shard.clone().connection(Rc::new(stream)));
        }
    })
}

/// One logged-in connection.
struct Member {
    id: u64,
    stream: Rc<TcpStream>,
    /// Bytes its socket did not take yet; written before anything newer.
    backlog: Rc<RefCell<Vec<u8>>>,
}

/// A thread's state. One thread, so `Rc` and `RefCell`; no borrow is held
/// across an `.await`.
struct Shard {
    hub: Arc<Hub>,
    /// This thread's logged-in connections, in login order.
    members: RefCell<Vec<Member>>,
    next_id: Cell<u64>,
    /// Every connection reads into this, then keeps only a cut line: an
    /// idle connection holds no read buffer.
    scratch: RefCell<Vec<u8>>,
}

impl Shard {
    /// Writes every batch to every member: all batches pending at once
    /// with one write per member.
    async fn deliver(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<Batch>) {
        let mut joined = Vec::new();
        while let Some(batch) = inbox.recv().await {
            let frames: &[u8] = match inbox.try_recv() {
                Err(_) => &batch,
                Ok(next) => {
                    joined.clear();
                    joined.extend_from_slice(&batch);
                    joined.extend_from_slice(&next);
                    while let Ok(more) = inbox.try_recv() {
                        joined.extend_from_slice(&more);
                    }
                    &joined
                }
            };
            for member in self.members.borrow().iter() {
                // A member whose socket failed is dropped by its reader.
                let _ = send(&member.stream, &member.backlog, frames);
            }
        }
    }

    async fn connection(self: Rc<Self>, stream: Rc<TcpStream>) {
        let mut name: Option<Vec<u8>> = None;
        let mut id = None;
        let backlog = Rc::new(RefCell::new(Vec::new()));
        let mut pending: Vec<u8> = Vec::new();
        let mut reply = Vec::new();
        let mut batch = Vec::new();
        'read: loop {
            if stream.readable().await.is_err() {
                break;
            }
            let mut scratch = self.scratch.borrow_mut();
            match stream.try_read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => pending.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => break,
            }
            drop(scratch);
            let mut used = 0;
            for end in memchr::memchr_iter(b'\n', &pending) {
                let line = &pending[used..end];
                used = end + 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let (verb, rest) = match memchr::memchr(b' ', line) {
                    Some(at) => (&line[..at], &line[at + 1..]),
                    None => (line, &b""[..]),
                };
                reply.clear();
                match (verb, &name) {
                    (b"MSG", Some(from)) => {
                        batch.extend_from_slice(b"MSG ");
                        batch.extend_from_slice(from);
                        batch.push(b' ');
                        batch.extend_from_slice(rest);
                        batch.push(b'\n');
                    }
                    (b"NAME", None) => {
                        reply.extend_from_slice(b"WELCOME ");
                        reply.extend_from_slice(rest);
                        reply.push(b'\n');
                        if !send(&stream, &backlog, &reply) {
                            break 'read;
                        }
                        name = Some(rest.to_vec());
                        let me = self.next_id.get();
                        self.next_id.set(me + 1);
                        id = Some(me);
                        self.members.borrow_mut().push(Member {
                            id: me,
                            stream: stream.clone(),
                            backlog: backlog.clone(),
                        });
                    }
                    (b"PING", _) => {
                        reply.extend_from_slice(b"PONG");
                        if !rest.is_empty() {
                            reply.push(b' ');
                            reply.extend_from_slice(rest);
                        }
                        reply.push(b'\n');
                        if !send(&stream, &backlog, &reply) {
                            break 'read;
                        }
                    }
                    _ => {}
                }
            }
            pending.drain(..used);
            if pending.is_empty() {
                pending = Vec::new();
            }
            if !batch.is_empty() {
                self.hub.broadcast(Arc::from(&batch[..]));
                batch.clear();
            }
        }
        if let Some(id) = id {
            self.members.borrow_mut().retain(|m| m.id != id);
        }
    }
}

/// Writes `frames` to `stream` now if nothing is waiting before them, and
/// queues what the socket does not take (flushed by a task of its own).
/// False if the connection is broken.
fn send(stream: &Rc<TcpStream>, backlog: &Rc<RefCell<Vec<u8>>>, frames: &[u8]) -> bool {
    let mut queued = backlog.borrow_mut();
    if !queued.is_empty() {
        queued.extend_from_slice(frames);
        return true;
    }
    let written = match stream.try_write(frames) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written < frames.len() {
        queued.extend_from_slice(&frames[written..]);
        tokio::task::spawn_local(flush(stream.clone(), backlog.clone()));
    }
    true
}

/// Writes a connection's backlog as its socket takes it, until it is empty.
async fn flush(stream: Rc<TcpStream>, backlog: Rc<RefCell<Vec<u8>>>) {
    loop {
        if stream.writable().await.is_err() {
            return;
        }
        let mut queued = backlog.borrow_mut();
        match stream.try_write(&queued) {
            Ok(n) => {
                queued.drain(..n);
                if queued.is_empty() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                queued.clear();
                return;
            }
        }
    }
}
