//! The interactive terminal, shared by the line editor and the conversation.
//!
//! rustyline owns the prompt and the line being typed; everything else is
//! printed by one thread, the painter, through rustyline's external printer.
//! While the user is typing, the printer clears the prompt, prints the line
//! and redraws the prompt with the half-typed text below it; between two
//! prompts it writes directly. One painter keeps the conversation's lines and the
//! program's own notices in one order.
//!
//! # Showing the user's own messages once
//!
//! A sent message comes back from the server in the room's order, with the
//! time and the sender's color like any other, so the line the user typed is
//! erased once it is accepted instead of being shown twice. rustyline leaves
//! the accepted line on screen and moves below it; the painter moves back up
//! over it ([`rows_taken`] says how far) and clears. For that, nothing may be
//! printed between the two: from the moment Enter is pressed ([`Screen::hold`],
//! called from the key binding, still inside rustyline) the painter keeps the
//! room's lines back, and prints them just after the erasure
//! ([`Screen::release`]).
//!
//! One window remains, and it is rustyline's: a line handed to the editor in
//! the same instant as the Enter key may still sit in the editor's channel
//! when it returns. Usually the erasure is printed directly before the next
//! prompt starts, and that line follows it, as it should. Only if the next
//! prompt has already started does the line come out first, and the erasure
//! then wipes it instead of the typed line. Closing that would take a way to
//! ask rustyline whether its channel is empty, which it does not offer.
//!
//! # Why a thread
//!
//! rustyline's printer hands each line to the editor through a channel of one
//! slot, so printing waits until the editor has taken the previous line. That
//! wait belongs on a thread of its own: the conversation waits on the painter
//! (which is how a slow terminal slows the reading of the socket, until the
//! server skips frames and says so), and the editor never waits on anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::{io, thread};

use rustyline::{ExternalPrinter, GraphemeClusterMode};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use unicode_segmentation::UnicodeSegmentation as _;

use crate::reflow::Shown;
use crate::session::Show;

/// Lines from the conversation that may wait for the terminal before the
/// conversation stops reading the socket.
const LINES_BACKLOG: usize = 256;

/// A line ending that leaves the cursor where it is: up one row, then a
/// newline back down to the start of the row. rustyline's printer adds a
/// newline to anything that does not end with one; this satisfies it without
/// moving (except on the top row of a screen, where it costs one blank row).
const STAY: &str = "\x1b[A\n";

/// What the painter is asked to do.
enum Paint {
    /// Print one line (without its line ending).
    Line(String),
    /// The accepted line is done with: erase its rows, then print the lines
    /// kept back since Enter.
    Release { erase_rows: usize },
    /// Make sure that everything printed before is on the screen, not still
    /// waiting in rustyline's channel; answer when it is.
    Barrier(oneshot::Sender<()>),
    /// Answer once everything before has been printed.
    Flush(oneshot::Sender<()>),
}

/// A handle on the terminal: cheap to clone, one for the editor's key
/// bindings, one for the conversation, one for the program.
#[derive(Clone)]
pub struct Screen {
    /// From the program and the editor: never waits.
    control: mpsc::UnboundedSender<Paint>,
    /// From the conversation: bounded, see [`LINES_BACKLOG`].
    lines: mpsc::Sender<Paint>,
    /// Set from Enter until [`Screen::release`].
    holding: Arc<AtomicBool>,
}

impl Screen {
    /// Starts the painter, which prints through `printer` and notes each
    /// line it prints in `shown`.
    pub fn start(
        printer: impl ExternalPrinter + Send + 'static,
        shown: Shown,
        runtime: Handle,
    ) -> io::Result<Screen> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (lines, lines_rx) = mpsc::channel(LINES_BACKLOG);
        let holding = Arc::new(AtomicBool::new(false));
        let painter = Painter {
            printer,
            holding: holding.clone(),
            held: Vec::new(),
            shown,
        };
        thread::Builder::new()
            .name("painter".into())
            .spawn(move || runtime.block_on(painter.run(control_rx, lines_rx)))?;
        Ok(Screen {
            control,
            lines,
            holding,
        })
    }

    /// Prints a line of the program's own.
    pub fn print(&self, line: String) {
        // The painter only stops once every Screen is gone.
        let _ = self.control.send(Paint::Line(line));
    }

    /// Keeps the conversation's lines back: the user pressed Enter, and the
    /// accepted line is about to be erased. Called from inside the editor.
    pub fn hold(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }

    /// Erases the accepted line, which took `erase_rows` rows (none to keep
    /// it), and prints what was kept back meanwhile.
    pub fn release(&self, erase_rows: usize) {
        let _ = self.control.send(Paint::Release { erase_rows });
    }

    /// Waits, at most `limit`, until everything sent so far is printed.
    pub fn flush(&self, runtime: &Handle, limit: Duration) {
        let (done, printed) = oneshot::channel();
        if self.control.send(Paint::Flush(done)).is_ok() {
            let _ = runtime.block_on(tokio::time::timeout(limit, printed));
        }
    }

    /// The conversation's way to the screen.
    pub fn lines(&self) -> ScreenLines {
        ScreenLines {
            lines: self.lines.clone(),
        }
    }
}

/// The conversation's way to the screen: [`Show`] that waits when the
/// terminal is behind.
pub struct ScreenLines {
    lines: mpsc::Sender<Paint>,
}

impl ScreenLines {
    /// Returns once every line shown so far is on the screen, so that the
    /// editor can be interrupted without losing one.
    pub async fn barrier(&self) {
        let (done, shown) = oneshot::channel();
        if self.lines.send(Paint::Barrier(done)).await.is_ok() {
            let _ = shown.await;
        }
    }
}

impl Show for ScreenLines {
    async fn show(&mut self, line: String) -> io::Result<()> {
        self.lines
            .send(Paint::Line(line))
            .await
            .map_err(|_| io::Error::other("the terminal is closed"))
    }
}

struct Painter<P> {
    printer: P,
    holding: Arc<AtomicBool>,
    /// Lines kept back while holding.
    held: Vec<String>,
    /// Every line printed, for a repair after a resize.
    shown: Shown,
}

impl<P: ExternalPrinter> Painter<P> {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Paint>,
        mut lines: mpsc::Receiver<Paint>,
    ) {
        loop {
            let paint = tokio::select! {
                biased;
                Some(paint) = control.recv() => paint,
                Some(paint) = lines.recv() => paint,
                else => return,
            };
            match paint {
                Paint::Line(line) if self.holding.load(Ordering::SeqCst) => self.held.push(line),
                Paint::Line(mut line) => {
                    self.shown.add(&line);
                    line.push('\n');
                    self.print(line);
                }
                Paint::Release { erase_rows } => {
                    let text = release_text(erase_rows, &self.held);
                    for line in self.held.drain(..) {
                        self.shown.add(&line);
                    }
                    self.holding.store(false, Ordering::SeqCst);
                    if !text.is_empty() {
                        self.print(text);
                    }
                }
                Paint::Barrier(done) => {
                    // Printing waits until the editor has taken the line
                    // before; it draws that line before it can notice
                    // anything else.
                    self.print(STAY.to_owned());
                    let _ = done.send(());
                }
                Paint::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn print(&mut self, text: String) {
        // A terminal that cannot be written to any more has nobody to tell.
        let _ = self.printer.print(text);
    }
}

/// What to print to erase `erase_rows` rows above the cursor and print the
/// `held` lines in their place. It ends with a line ending, as rustyline's
/// printer wants, so that it does the same printed directly or through the
/// editor.
fn release_text(erase_rows: usize, held: &[String]) -> String {
    let mut text = String::new();
    if erase_rows > 0 {
        text = format!("\x1b[{erase_rows}A\r\x1b[J");
    }
    for line in held {
        text.push_str(line);
        text.push('\n');
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push_str(STAY);
    }
    text
}

/// How many rows the `prompt` and the accepted `line` take on a terminal
/// `cols` columns wide, counting the row rustyline moves to after it: how
/// far up the erasure starts.
///
/// This follows rustyline's own layout (`calculate_position`): a grapheme
/// too wide for the rest of a row starts the next one, a line that exactly
/// fills its last row leaves the cursor on the row after, tabs stop every
/// `tab_stop` columns.
pub fn rows_taken(
    prompt: &str,
    line: &str,
    cols: usize,
    widths: GraphemeClusterMode,
    tab_stop: usize,
) -> usize {
    let cols = cols.max(1);
    let tab_stop = tab_stop.max(1);
    let end = [prompt, line]
        .iter()
        .fold((0, 0), |(mut row, mut col), text| {
            for grapheme in text.graphemes(true) {
                if grapheme == "\n" {
                    row += 1;
                    col = 0;
                    continue;
                }
                let width = if grapheme == "\t" {
                    tab_stop - col % tab_stop
                } else {
                    usize::from(widths.width(grapheme))
                };
                col += width;
                if col > cols {
                    row += 1;
                    col = width;
                }
            }
            if col == cols {
                row += 1;
                col = 0;
            }
            (row, col)
        });
    end.0 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(prompt: &str, line: &str, cols: usize) -> usize {
        rows_taken(prompt, line, cols, GraphemeClusterMode::WcWidth, 8)
    }

    #[test]
    fn a_short_line_takes_its_row_and_the_one_below() {
        assert_eq!(rows("alice> ", "hello", 80), 1);
        assert_eq!(rows("alice> ", "", 80), 1);
    }

    #[test]
    fn long_lines_wrap() {
        // 7 + 13 = 20 columns on a 10-column terminal: exactly two rows, and
        // the cursor goes to a third.
        assert_eq!(rows("alice> ", "0123456789abc", 10), 3);
        assert_eq!(rows("alice> ", "0123456789ab", 10), 2);
        assert_eq!(rows("alice> ", "01", 10), 1);
        assert_eq!(rows("alice> ", "012", 10), 2);
    }

    #[test]
    fn wide_characters_do_not_split_across_rows() {
        // "ab> " and three 2-column characters: 4 + 2 + 2 = 8, the next one
        // does not fit in 9 columns and starts row 2.
        assert_eq!(rows("ab> ", "日本語", 9), 2);
        assert_eq!(rows("ab> ", "日本語", 10), 2);
        assert_eq!(rows("ab> ", "日本語", 11), 1);
    }

    #[test]
    fn tabs_and_newlines_count_as_rustyline_draws_them() {
        assert_eq!(rows("> ", "a\tb", 80), 1);
        assert_eq!(rows("> ", "a\tb", 9), 2);
        assert_eq!(rows("> ", "one\ntwo", 80), 2);
    }

    #[test]
    fn release_erases_then_prints_what_was_held() {
        assert_eq!(release_text(0, &[]), "");
        assert_eq!(release_text(1, &[]), format!("\x1b[1A\r\x1b[J{STAY}"));
        assert_eq!(
            release_text(2, &["bob: hi".into(), "* carol joined".into()]),
            "\x1b[2A\r\x1b[Jbob: hi\n* carol joined\n"
        );
        assert_eq!(release_text(0, &["bob: hi".into()]), "bob: hi\n");
    }
}
