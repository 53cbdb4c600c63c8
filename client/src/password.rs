//! Passwords of registered names: where the client gets them (a file, the
//! environment, the terminal without echo), and the care that they go
//! nowhere but the wire.
//!
//! A password is held as a [`Password`], whose `Debug` never shows it. It
//! is never printed, never put in the history file, and never part of an
//! error text: the messages here name the file or the variable, never
//! what they hold.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use chat_protocol::{Password, PASSWORD_RULES};

/// How many wrong passwords a person may type at the login before the
/// client gives up. The server allows 5 a minute for a name, from anyone;
/// three leave the rest for the owner's other devices.
pub const PASSWORD_TRIES: u32 = 3;

/// The environment variable that may hold the password, for scripts.
pub const PASSWORD_VAR: &str = "CHAT_PASSWORD";

/// The password a run was given up front: from `--password-file` if it
/// was named, else from `CHAT_PASSWORD` (`env`) if that is set and not
/// empty, else none.
pub fn given(file: Option<&Path>, env: Option<OsString>) -> Result<Option<Password>, String> {
    if let Some(file) = file {
        return read_file(file).map(Some);
    }
    let Some(value) = env.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let Some(text) = value.to_str() else {
        return Err(format!("{PASSWORD_VAR} is not UTF-8"));
    };
    checked(text, PASSWORD_VAR).map(Some)
}

/// The password in the first line of `file`, without its line ending.
pub fn read_file(file: &Path) -> Result<Password, String> {
    let shown = file.display();
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let Ok(text) = std::str::from_utf8(first) else {
        return Err(format!("the first line of {shown} is not UTF-8"));
    };
    if text.is_empty() {
        return Err(format!("the first line of {shown} is empty"));
    }
    checked(text, &format!("the first line of {shown}"))
}

/// `text` as a password if it follows the protocol's rules; if not, the
/// server would only call it wrong (and a line break in it would make a
/// second frame), so it is refused here, naming `source`, not the text.
fn checked(text: &str, source: &str) -> Result<Password, String> {
    let password = Password::new(text);
    if password.is_acceptable() {
        Ok(password)
    } else {
        Err(format!(
            "{source} is not a usable password: {PASSWORD_RULES}"
        ))
    }
}

/// What a person typed at a hidden prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// A line, ended by Enter.
    Line(Password),
    /// Ctrl-C, or Ctrl-D on an empty line, or the end of the input: the
    /// person gave up.
    GaveUp,
    /// `stop` said to stop: the conversation ended meanwhile.
    Stopped,
}

/// Reads a line from the terminal on stdin without showing it, as
/// `passwd` does: the terminal's echo is off, and so are its signals, so
/// that Ctrl-C gives up here rather than reaching the program's handler.
/// Backspace and Ctrl-U edit; arrow keys and other escape sequences are
/// ignored. The terminal's settings are restored however it ends.
///
/// `prompt` is written once the echo is off, so that nothing typed after
/// it shows; the line ending that Enter does not echo is written at the end.
/// Every 100 ms without a key, `stop` is asked whether to stop waiting.
#[cfg(unix)]
pub fn read_hidden(prompt: &str, stop: &dyn Fn() -> bool) -> io::Result<Typed> {
    use std::io::Write as _;
    use std::os::fd::AsFd as _;

    use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, SetArg};

    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let saved = tcgetattr(fd)?;
    let mut hidden = saved.clone();
    hidden
        .local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ICANON | LocalFlags::ISIG);
    hidden
        .input_flags
        .remove(InputFlags::IXON | InputFlags::ICRNL);
    tcsetattr(fd, SetArg::TCSANOW, &hidden)?;
    /// Puts the terminal back as it was, on every way out.
    struct Restore<'a>(std::os::fd::BorrowedFd<'a>, nix::sys::termios::Termios);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = tcsetattr(self.0, SetArg::TCSANOW, &self.1);
        }
    }
    let _restore = Restore(fd, saved);
    let mut stdout = io::stdout();
    write!(stdout, "{prompt}")?;
    stdout.flush()?;
    let typed = read_keys(fd, stop);
    write!(stdout, "\r\n")?;
    stdout.flush()?;
    typed
}

/// The keys of one hidden line, from `fd`.
#[cfg(unix)]
fn read_keys(fd: std::os::fd::BorrowedFd<'_>, stop: &dyn Fn() -> bool) -> io::Result<Typed> {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags};

    let mut line = Line::default();
    loop {
        let mut ready = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut ready, 100u16) {
            Ok(0) | Err(Errno::EINTR) => {
                // A signal, too, may be the news that the conversation
                // ended: the program raises SIGINT to wake the editor.
                if stop() {
                    return Ok(Typed::Stopped);
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let mut byte = [0];
        match nix::unistd::read(fd, &mut byte) {
            Ok(0) => return Ok(Typed::GaveUp),
            Ok(_) => {}
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(typed) = line.key(byte[0]) {
            return Ok(typed);
        }
    }
}

/// Without termios there is no way to hide what is typed: no prompt.
#[cfg(not(unix))]
pub fn read_hidden(_: &str, _: &dyn Fn() -> bool) -> io::Result<Typed> {
    Err(io::Error::other(
        "cannot read a password without showing it here; use --password-file",
    ))
}

/// A hidden line being typed, byte by byte.
#[derive(Default)]
struct Line {
    bytes: Vec<u8>,
    escape: Escape,
}

/// Where in an escape sequence (an arrow key, a paste's brackets) the
/// input is: its bytes are not part of the password.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// After `ESC [` or `ESC O`, until the final byte.
    Sequence,
}

impl Line {
    /// Takes one byte; the outcome once the line is done.
    fn key(&mut self, byte: u8) -> Option<Typed> {
        match self.escape {
            Escape::Started => {
                self.escape = if byte == b'[' || byte == b'O' {
                    Escape::Sequence
                } else {
                    Escape::None
                };
                return None;
            }
            Escape::Sequence => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' | b'\n' => {
                let bytes = std::mem::take(&mut self.bytes);
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Some(Typed::Line(Password::new(text)));
            }
            // Ctrl-C; Ctrl-D on an empty line.
            0x03 => return Some(Typed::GaveUp),
            0x04 if self.bytes.is_empty() => return Some(Typed::GaveUp),
            // Backspace (DEL or Ctrl-H): one character, however many bytes.
            0x7f | 0x08 => {
                while let Some(b) = self.bytes.pop() {
                    if b & 0xc0 != 0x80 {
                        break;
                    }
                }
            }
            // Ctrl-U: the whole line.
            0x15 => self.bytes.clear(),
            0x1b => self.escape = Escape::Started,
            b if b < 0x20 => {}
            b => self.bytes.push(b),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(keys: &[u8]) -> Option<Typed> {
        let mut line = Line::default();
        keys.iter().find_map(|&b| line.key(b))
    }

    fn line(text: &str) -> Option<Typed> {
        Some(Typed::Line(Password::new(text)))
    }

    #[test]
    fn a_hidden_line_is_edited_like_a_terminal_line() {
        assert_eq!(typed(b"hunter22\r"), line("hunter22"));
        assert_eq!(typed(b"hunter22\n"), line("hunter22"));
        assert_eq!(typed(b"hunterx\x7f22\r"), line("hunter22"));
        assert_eq!(typed("pé\x08x\r".as_bytes()), line("px"));
        assert_eq!(typed(b"wrong\x15right!!\r"), line("right!!"));
        assert_eq!(typed(b"a\x1b[Db\x1bOCc\r"), line("abc"), "arrows ignored");
        assert_eq!(
            typed(b"\x1b[200~pasted1\x1b[201~\r"),
            line("pasted1"),
            "a paste's brackets ignored"
        );
        assert_eq!(typed(b"abc\x03"), Some(Typed::GaveUp));
        assert_eq!(typed(b"\x04"), Some(Typed::GaveUp));
        assert_eq!(typed(b"ab\x04c\r"), line("abc"));
        assert_eq!(typed(b"no end"), None);
    }

    /// A file of the test's own, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn with(name: &str, content: &[u8]) -> Scratch {
            let path = std::env::temp_dir().join(format!(
                "chat-client-password-{}-{name}",
                std::process::id()
            ));
            std::fs::write(&path, content).expect("write the password file");
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn a_password_file_gives_its_first_line() {
        for (name, content) in [
            ("plain", &b"hunter22"[..]),
            ("newline", b"hunter22\n"),
            ("crlf", b"hunter22\r\n"),
            ("more", b"hunter22\nsecond line\n"),
        ] {
            let file = Scratch::with(name, content);
            assert_eq!(read_file(&file.0), Ok(Password::new("hunter22")), "{name}");
        }
    }

    #[test]
    fn a_bad_password_file_is_explained_without_its_content() {
        let missing = std::env::temp_dir().join("chat-client-no-such-password-file");
        let error = read_file(&missing).unwrap_err();
        assert!(
            error.starts_with(&format!("cannot read {}: ", missing.display())),
            "{error}"
        );
        let empty = Scratch::with("empty", b"\nhunter22\n");
        assert!(read_file(&empty.0).unwrap_err().ends_with("is empty"));
        for (name, content) in [("first", &b"short\n"[..]), ("second", b"two words\n")] {
            let file = Scratch::with(name, content);
            let error = read_file(&file.0).unwrap_err();
            assert!(error.contains(PASSWORD_RULES), "{error}");
            let secret = String::from_utf8_lossy(content);
            assert!(!error.contains(secret.trim()), "{error}");
        }
    }

    #[test]
    fn the_file_wins_over_the_variable() {
        let file = Scratch::with("wins", b"from-the-file\n");
        assert_eq!(
            given(Some(&file.0), Some("from-the-variable".into())),
            Ok(Some(Password::new("from-the-file")))
        );
        assert_eq!(
            given(None, Some("from-the-variable".into())),
            Ok(Some(Password::new("from-the-variable")))
        );
        assert_eq!(given(None, Some("".into())), Ok(None));
        assert_eq!(given(None, None), Ok(None));
        let error = given(None, Some("short".into())).unwrap_err();
        assert!(
            error.starts_with("CHAT_PASSWORD is not a usable"),
            "{error}"
        );
        assert!(!error.contains("short"), "{error}");
    }
}
