//! Driving `chat-client` at a terminal, as a person does: a [`Pane`] runs
//! the client in a tmux pane of its own, types with `send-keys`, and reads
//! the screen with `capture-pane`.
//!
//! Every wait polls the screen until what it looks for is there, bounded by
//! [`TIMEOUT`]; nothing sleeps a fixed time and hopes. Where tmux is not
//! installed [`Pane::start`] says so and gives `None`, and the test passes,
//! except in CI (`CI` set), where a missing tmux fails it: `.ci/run`
//! installs it, so its absence is a broken runner, not a reason to skip.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{binary, Server, TIMEOUT};

/// The size of a new pane: columns, rows.
pub const SIZE: (u16, u16) = (100, 30);

/// A tmux server of the test's own, on its own socket, with one pane
/// running the client; killed when dropped.
pub struct Pane {
    dir: PathBuf,
}

impl Pane {
    /// Starts `chat-client` for `server`, see [`Pane::start_at`].
    pub fn start(server: &Server, args: &[&str]) -> Option<Pane> {
        Pane::start_at(server.addr(), args)
    }

    /// Starts `chat-client --addr addr` with `args` in a pane of [`SIZE`], or
    /// `None` (after saying why) where tmux is not installed. Its history
    /// goes to a file of the test's own ([`Pane::history`]).
    pub fn start_at(addr: SocketAddr, args: &[&str]) -> Option<Pane> {
        Pane::start_with(addr, args, None)
    }

    /// Like [`Pane::start_at`], but with `data_home` as the client's data
    /// directory (`XDG_DATA_HOME`) and no `--history`, so that history goes
    /// where it goes by default.
    pub fn start_with(addr: SocketAddr, args: &[&str], data_home: Option<&Path>) -> Option<Pane> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "tmux is missing in CI");
            // Straight to stderr, which the test harness does not capture,
            // so that the skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: tmux is not installed (apt-get install -y tmux)"
            );
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chat-client-tty-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        // The pane stays after the client exits, so that its last words can
        // be read.
        std::fs::write(dir.join("tmux.conf"), "set -g remain-on-exit on\n")
            .expect("write tmux.conf");
        let pane = Pane { dir };
        // History shows each message's own time, in the local time zone:
        // UTC here, so that the tests know what to expect.
        let mut command = vec!["TZ=UTC".to_owned()];
        if let Some(data_home) = data_home {
            command.push(format!(
                "XDG_DATA_HOME={}",
                quote(&data_home.to_string_lossy())
            ));
        }
        command.push(quote(&binary("chat-client").to_string_lossy()));
        command.extend(["--addr".to_owned(), addr.to_string()]);
        if data_home.is_none() {
            command.extend([
                "--history".to_owned(),
                quote(&pane.dir.join("history").to_string_lossy()),
            ]);
        }
        command.extend(args.iter().map(|a| quote(a)));
        // tmux does not always record a pane's exit status, so the shell
        // that runs the client writes it down.
        let status = pane.dir.join("status");
        let command = format!(
            "{}; echo $? > {}",
            command.join(" "),
            quote(&status.to_string_lossy())
        );
        let conf = pane.dir.join("tmux.conf");
        let (cols, rows) = (SIZE.0.to_string(), SIZE.1.to_string());
        pane.tmux(&[
            "-f",
            &conf.to_string_lossy(),
            "new-session",
            "-d",
            "-x",
            &cols,
            "-y",
            &rows,
            &command,
        ]);
        Some(pane)
    }

    /// What the client's history file holds.
    pub fn history(&self) -> String {
        std::fs::read_to_string(self.dir.join("history")).expect("the history file")
    }

    pub fn tmux(&self, args: &[&str]) -> Output {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(self.dir.join("socket"))
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Types text as it is, without pressing Enter.
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", text]);
    }

    /// Pastes text as a terminal does, marked as a paste when the client
    /// asked for that (bracketed paste), without pressing Enter.
    pub fn paste(&self, text: &str) {
        self.tmux(&["set-buffer", "-b", "paste", text]);
        self.tmux(&["paste-buffer", "-p", "-d", "-b", "paste"]);
    }

    /// Pastes text as a terminal without bracketed paste does: every line
    /// ending is the Enter key, and nothing marks it as a paste.
    pub fn paste_unmarked(&self, text: &str) {
        self.tmux(&["set-buffer", "-b", "paste", text]);
        self.tmux(&["paste-buffer", "-d", "-b", "paste"]);
    }

    /// Presses one key, in tmux's names (`Enter`, `C-c`).
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    /// Sends keys and texts in one `send-keys`, so that the client reads
    /// them at once, as a fast typist or a paste without bracketed paste
    /// brings them: a word that is a key name (`Enter`) is that key, any
    /// other is typed as it is.
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Resizes the terminal to `cols` columns and `rows` rows, as a person
    /// dragging the window's corner does: the client gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        self.tmux(&["resize-window", "-x", &cols, "-y", &rows]);
    }

    /// The screen's lines, without trailing spaces or empty lines at the end.
    pub fn screen(&self) -> Vec<String> {
        let output = self.tmux(&["capture-pane", "-p"]);
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Every line the pane has shown, the scrolled-off ones too. Read this
    /// after the client has exited: tmux scrolls a dead pane up a row to
    /// say so, and a short session's first line goes off the screen.
    pub fn transcript(&self) -> Vec<String> {
        let output = self.tmux(&["capture-pane", "-p", "-S", "-"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    }

    /// Polls the screen until `ready` holds, and returns it; panics with the
    /// screen after [`TIMEOUT`].
    pub fn wait_for(&self, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the last line on screen is exactly `line` (the prompt
    /// with what is typed so far, the cursor's line).
    pub fn wait_for_last_line(&self, line: &str) -> Vec<String> {
        self.wait_for(&format!("the last line to be {line:?}"), |screen| {
            screen.last().map(String::as_str) == Some(line)
        })
    }

    /// Waits until a line ending with `text` is on screen above a last line
    /// that is exactly `last`.
    pub fn wait_for_last_line_after(&self, text: &str, last: &str) -> Vec<String> {
        self.wait_for(&format!("{text:?} above {last:?}"), |screen| {
            let Some((cursor_line, above)) = screen.split_last() else {
                return false;
            };
            cursor_line == last && above.iter().any(|l| l.ends_with(text))
        })
    }

    /// Waits until the line right above a last line that is exactly `last`
    /// ends with `text`: what the last command brought, however much has
    /// scrolled off the screen before.
    pub fn wait_for_line_above(&self, text: &str, last: &str) -> Vec<String> {
        self.wait_for(&format!("{text:?} just above {last:?}"), |screen| {
            matches!(screen, [.., above, cursor_line] if cursor_line == last && above.ends_with(text))
        })
    }

    /// Waits for the client to exit and returns its exit status.
    pub fn wait_for_exit(&self) -> i32 {
        let start = Instant::now();
        loop {
            let written = std::fs::read_to_string(self.dir.join("status")).unwrap_or_default();
            if written.ends_with('\n') {
                return written.trim().parse().expect("an exit status");
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "the client did not exit; the screen:\n{}",
                self.screen().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.dir.join("socket"))
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Quotes a word for the shell that tmux runs the command with.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Whether some line on screen ends with `text` (after its `HH:MM`).
pub fn shows(screen: &[String], text: &str) -> bool {
    screen.iter().any(|line| line.ends_with(text))
}
