//! The coordinator's side of the workers: it starts them (this same binary,
//! `chat-bench worker …`), gives each a share of the users, and sends every
//! command to all of them at once.
//!
//! Several processes, because one process may hold at most 20 000 file
//! descriptors and the server needs its own; and because a worker is one
//! thread, several of them can use both cores when the server is idle.

use std::io;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};

use crate::clock::now_ns;
use crate::control::{Command, Tally};
use crate::dialect::Dialect;
use crate::transport::Transport;

/// Users a worker holds at most by default: well under the per-process
/// descriptor limit.
pub const USERS_PER_WORKER: u32 = 5000;

struct Worker {
    child: Child,
    commands: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
}

/// The running workers of one scenario run.
pub struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    /// Starts `workers` workers (0: one per [`USERS_PER_WORKER`]) sharing
    /// `users` users named `<prefix><id>`, connecting over `transport` to
    /// `addr` from `addresses` loopback addresses (0: from the system's
    /// choice; see [`crate::worker::source`]).
    pub fn start(
        addr: &str,
        dialect: Dialect,
        transport: Transport,
        users: u32,
        workers: u32,
        prefix: &str,
        addresses: u32,
    ) -> io::Result<Fleet> {
        let workers = if workers == 0 {
            users.div_ceil(USERS_PER_WORKER).max(1)
        } else {
            workers.min(users.max(1))
        };
        let exe = std::env::current_exe()?;
        let mut fleet = Fleet {
            workers: Vec::new(),
        };
        for w in 0..workers {
            let first = users * w / workers;
            let count = users * (w + 1) / workers - first;
            let mut child = Process::new(&exe)
                .arg("worker")
                .args(["--addr", addr])
                .args(["--proto", dialect_name(dialect)])
                .args(["--transport", transport.name()])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--prefix", prefix])
                .args(["--addresses", &addresses.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let commands = child.stdin.take().expect("stdin is piped");
            let replies = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
            fleet.workers.push(Worker {
                child,
                commands,
                replies,
            });
        }
        Ok(fleet)
    }

    /// Sends `command` to every worker and returns each one's one-line reply
    /// split into words after the verb.
    pub async fn ask(&mut self, command: &Command) -> io::Result<Vec<Vec<u64>>> {
        self.send_all(command).await?;
        let mut replies = Vec::new();
        for worker in &mut self.workers {
            let line = next_line(worker).await?;
            replies.push(
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|w| w.parse().ok())
                    .collect(),
            );
        }
        Ok(replies)
    }

    /// Arms every worker for the run, then starts it; returns when every
    /// worker has seen it through (or timed out). Returns when the senders
    /// were told to start, on the shared clock.
    pub async fn run(&mut self, run: Command) -> io::Result<u64> {
        if let Command::Run {
            senders, messages, ..
        } = run
        {
            self.ask(&Command::Arm { senders, messages }).await?;
        }
        let start_ns = now_ns();
        self.ask(&run).await?;
        Ok(start_ns)
    }

    /// Has users `0..size * rooms` join room `id / size` (see
    /// [`Command::Join`]); returns how many joined, were refused, and had
    /// no answer before the timeout.
    pub async fn join(&mut self, size: u32, rooms: u32, timeout_ms: u64) -> io::Result<[u64; 3]> {
        let replies = self
            .ask(&Command::Join {
                size,
                rooms,
                timeout_ms,
            })
            .await?;
        Ok(replies.iter().fold([0; 3], |mut sum, reply| {
            for (s, v) in sum.iter_mut().zip(reply) {
                *s += v;
            }
            sum
        }))
    }

    /// Sends `command` only to the worker holding user 0, and the rest of
    /// the barrier to all.
    pub async fn sync(&mut self, round: u32, timeout_ms: u64) -> io::Result<u64> {
        for (w, worker) in self.workers.iter_mut().enumerate() {
            let command = Command::Sync {
                round,
                send: w == 0,
                timeout_ms,
            };
            worker
                .commands
                .write_all(command.to_line().as_bytes())
                .await?;
        }
        let mut missing = 0;
        for worker in &mut self.workers {
            let line = next_line(worker).await?;
            missing += line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(missing)
    }

    /// Collects and adds up every worker's tally.
    pub async fn tally(&mut self) -> io::Result<Tally> {
        self.send_all(&Command::Report).await?;
        let mut total = Tally::default();
        for worker in &mut self.workers {
            let mut tally = Tally::default();
            loop {
                let line = next_line(worker).await?;
                if tally.read_line(&line).map_err(io::Error::other)? {
                    break;
                }
            }
            total.add(&tally);
        }
        Ok(total)
    }

    async fn send_all(&mut self, command: &Command) -> io::Result<()> {
        let line = command.to_line();
        for worker in &mut self.workers {
            worker.commands.write_all(line.as_bytes()).await?;
        }
        Ok(())
    }

    /// Ends every worker (and so closes all the users' connections).
    pub async fn stop(self) {
        for mut worker in self.workers {
            drop(worker.commands);
            let _ = worker.child.kill().await;
        }
    }
}

async fn next_line(worker: &mut Worker) -> io::Result<String> {
    worker.replies.next_line().await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a worker exited early (see its error above)",
        )
    })
}

pub fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Chat => "chat",
        Dialect::Raw => "raw",
    }
}
