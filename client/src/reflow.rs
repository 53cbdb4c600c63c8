//! Keeping the screen right when the terminal is resized.
//!
//! rustyline redraws the prompt on a resize as if the terminal had kept
//! every row as it was: it moves up as many rows as the prompt and the line
//! took at the old width, and clears them. Terminals that rewrap their
//! lines to the new width (tmux, and most terminal emulators today) have
//! moved the prompt's rows instead. Made narrower, the prompt takes more
//! rows than rustyline clears, and the rows it misses stay on the screen as
//! a stale copy of the prompt; made wider, it takes fewer, and rustyline
//! clears rows above it: the last lines of the conversation.
//!
//! rustyline hands the prompt it is about to draw to its highlighter, and
//! prints what that returns; [`Reflow::repair`] puts the cursor right
//! before it. Narrower: up over the stale rows, which are then cleared.
//! Wider: the lines that were cleared are printed again, from the ones the
//! painter keeps ([`Shown`]). Either way the prompt is then drawn where it
//! is, and nothing is left below it.
//!
//! One window remains: a line that the painter has handed to the editor
//! but the editor has not printed yet when the terminal is made wider may
//! be printed twice. The editor tells nobody when it prints a line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use rustyline::GraphemeClusterMode;
use unicode_segmentation::UnicodeSegmentation as _;

/// How many of the last lines printed above the prompt are kept: more than
/// any terminal has rows.
const SHOWN_KEPT: usize = 500;

/// The last lines printed above the prompt, as printed: the painter adds
/// them, a repair after a resize prints the last of them again.
#[derive(Clone, Default)]
pub struct Shown {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Shown {
    /// Takes note of a line printed above the prompt.
    pub fn add(&self, line: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == SHOWN_KEPT {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// The last lines that fill at least `rows` rows at `cols` columns,
    /// oldest first, and how many rows they fill (fewer only if there are
    /// not enough lines).
    fn last_rows(
        &self,
        rows: usize,
        cols: usize,
        widths: GraphemeClusterMode,
    ) -> (Vec<String>, usize) {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        let mut filled = 0;
        for line in lines.iter().rev() {
            if filled >= rows {
                break;
            }
            filled += line_rows(line, cols, widths);
            taken.push(line.clone());
        }
        taken.reverse();
        (taken, filled)
    }
}

/// How many columns the terminal on stdout has now, if it is one.
pub fn terminal_cols() -> Option<usize> {
    let (terminal_size::Width(cols), _) = terminal_size::terminal_size_of(std::io::stdout())?;
    Some(usize::from(cols))
}

/// How rustyline lays out text: the widths of graphemes and the tab stop.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub widths: GraphemeClusterMode,
    pub tab_stop: usize,
}

/// The line as rustyline last laid it out, to know where it put the
/// cursor: the text, the cursor's place in it, and the width.
#[derive(Default)]
pub struct Reflow {
    line: String,
    pos: usize,
    /// `None` until the first prompt is drawn.
    cols: Option<usize>,
}

impl Reflow {
    /// Forgets the last drawing: the next prompt is a new one, which
    /// rustyline lays out at the width the terminal has then.
    pub fn forget(&mut self) {
        self.line.clear();
        self.pos = 0;
        self.cols = None;
    }

    /// Takes note of the line and the cursor's place in it, whenever
    /// rustyline shows either.
    pub fn saw(&mut self, line: &str, pos: usize) {
        if self.line != line {
            self.line.clear();
            self.line.push_str(line);
        }
        self.pos = pos;
    }

    /// What to print before `prompt`, which rustyline is about to draw on a
    /// terminal now `cols` wide, so that it lands where it belongs; empty
    /// unless the width changed since the last drawing.
    pub fn repair(&mut self, prompt: &str, cols: usize, layout: Layout, shown: &Shown) -> String {
        let Some(old_cols) = self.cols.replace(cols) else {
            return String::new();
        };
        if old_cols == cols {
            return String::new();
        }
        let pos = if self.line.is_char_boundary(self.pos) {
            self.pos
        } else {
            self.line.len()
        };
        let before_cursor = &self.line[..pos];
        // The cursor's row in the prompt as rustyline placed it, and as the
        // terminal has moved it: the difference is how far from the
        // prompt's first row rustyline's clearing ended.
        let cursor_row = |cols| end_row(prompt, before_cursor, cols, layout);
        let (rustyline_row, rewrapped_row) = (cursor_row(old_cols), cursor_row(cols));
        if rewrapped_row > rustyline_row {
            // Narrower: the rows above are the prompt's first ones.
            let stale = rewrapped_row - rustyline_row;
            return format!("\x1b[{stale}A\r\x1b[J");
        }
        let cleared = rustyline_row - rewrapped_row;
        if cleared == 0 {
            return "\r\x1b[J".to_owned();
        }
        // Wider: the rows above were the conversation's last ones. Print
        // again the lines that filled them, from the first row of the
        // first of them, to end where the prompt starts.
        let (lines, rows) = shown.last_rows(cleared, cols, layout.widths);
        let mut repair = String::from("\r");
        if rows > cleared {
            repair.push_str(&format!("\x1b[{}A", rows - cleared));
        } else if rows < cleared {
            repair.push_str(&format!("\x1b[{}B", cleared - rows));
        }
        for line in lines {
            repair.push_str(&line);
            repair.push_str("\r\n");
        }
        repair.push_str("\x1b[J");
        repair
    }
}

/// The row on which `prompt` then `line` end, from 0, laid out as
/// rustyline lays them out (`calculate_position`): a grapheme too wide for
/// the rest of a row starts the next one, text that exactly fills its last
/// row leaves the cursor at the start of the next one, tabs stop every
/// `tab_stop` columns.
pub fn end_row(prompt: &str, line: &str, cols: usize, layout: Layout) -> usize {
    let cols = cols.max(1);
    let tab_stop = layout.tab_stop.max(1);
    let (mut row, mut col) = (0, 0);
    for text in [prompt, line] {
        for grapheme in text.graphemes(true) {
            if grapheme == "\n" {
                row += 1;
                col = 0;
                continue;
            }
            let width = if grapheme == "\t" {
                tab_stop - col % tab_stop
            } else {
                usize::from(layout.widths.width(grapheme))
            };
            col += width;
            if col > cols {
                row += 1;
                col = width;
            }
        }
    }
    if col == cols {
        row += 1;
    }
    row
}

/// How many rows a printed line takes at `cols` columns: at least one, and
/// its color sequences none.
fn line_rows(line: &str, cols: usize, widths: GraphemeClusterMode) -> usize {
    let cols = cols.max(1);
    let (mut rows, mut col) = (1, 0);
    for grapheme in without_escapes(line).graphemes(true) {
        let width = usize::from(widths.width(grapheme));
        col += width;
        if col > cols {
            rows += 1;
            col = width;
        }
    }
    rows
}

/// `text` without its escape sequences (`ESC [ … final`), which take no
/// room on the screen.
fn without_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout {
        widths: GraphemeClusterMode::WcWidth,
        tab_stop: 8,
    };

    fn shown(lines: &[&str]) -> Shown {
        let shown = Shown::default();
        for line in lines {
            shown.add(line);
        }
        shown
    }

    fn reflow(line: &str, cols: usize) -> Reflow {
        let mut reflow = Reflow::default();
        reflow.saw(line, line.len());
        assert_eq!(reflow.repair("> ", cols, LAYOUT, &Shown::default()), "");
        reflow
    }

    #[test]
    fn nothing_to_repair_while_the_width_stays() {
        let mut reflow = reflow("hello", 80);
        assert_eq!(reflow.repair("> ", 80, LAYOUT, &Shown::default()), "");
    }

    #[test]
    fn a_new_prompt_is_laid_out_afresh() {
        let mut reflow = reflow(&"a".repeat(27), 80);
        reflow.forget();
        assert_eq!(reflow.repair("> ", 10, LAYOUT, &Shown::default()), "");
    }

    #[test]
    fn narrower_goes_up_over_the_stale_rows() {
        // "> " and 27 characters: one row at 80 columns, three at 10.
        let mut reflow = reflow(&"a".repeat(27), 80);
        assert_eq!(
            reflow.repair("> ", 10, LAYOUT, &Shown::default()),
            "\x1b[2A\r\x1b[J"
        );
    }

    #[test]
    fn wider_prints_the_cleared_lines_again() {
        let mut reflow = reflow(&"a".repeat(27), 10);
        let said = shown(&["old", "\x1b[1mbob\x1b[0m: a line of 19", "hi"]);
        // Three rows at 10 columns, one at 80: rustyline cleared two rows
        // above the prompt, which "hi" and the long line (one row at 80)
        // filled.
        assert_eq!(
            reflow.repair("> ", 80, LAYOUT, &said),
            "\r\x1b[1mbob\x1b[0m: a line of 19\r\nhi\r\n\x1b[J"
        );
    }

    #[test]
    fn wider_starts_a_line_that_was_cleared_in_part_from_its_top() {
        // Two rows at 10 columns, one at 30; a 40-column line takes two,
        // of which the clearing took the lower one.
        let mut reflow = reflow(&"a".repeat(17), 10);
        let said = shown(&[&"b".repeat(40)]);
        assert_eq!(
            reflow.repair("> ", 30, LAYOUT, &said),
            format!("\r\x1b[1A{}\r\n\x1b[J", "b".repeat(40))
        );
    }

    #[test]
    fn the_cursor_row_follows_rustyline() {
        assert_eq!(end_row("> ", "abcdefgh", 10, LAYOUT), 1);
        assert_eq!(end_row("> ", "abcdefg", 10, LAYOUT), 0);
        assert_eq!(end_row("ab> ", "日本語", 9, LAYOUT), 1);
        assert_eq!(end_row("> ", "a\nb", 80, LAYOUT), 1);
    }

    #[test]
    fn colors_take_no_room() {
        assert_eq!(line_rows("\x1b[31mabc\x1b[0m", 3, LAYOUT.widths), 1);
        assert_eq!(line_rows("abcd", 3, LAYOUT.widths), 2);
        assert_eq!(line_rows("", 3, LAYOUT.widths), 1);
    }
}
