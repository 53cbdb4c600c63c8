//! One color per name, the same in every run and on every terminal, so that
//! a reader learns to recognise who is talking at a glance.
//!
//! A handful of ANSI codes is all this needs; the palette leaves out red,
//! which marks errors, and the dark and light extremes that vanish on one
//! background or the other.

use chat_protocol::name_key;

/// SGR color codes names are drawn from: green, yellow, blue, magenta, cyan
/// and their bright variants.
const PALETTE: [u8; 10] = [32, 33, 34, 35, 36, 92, 93, 94, 95, 96];

/// The SGR color code for `name`.
///
/// Names that differ only in letter case are the same user to the server,
/// so they get the same color. The hash is FNV-1a: fixed, unlike std's
/// randomly seeded hasher, so a name keeps its color from run to run.
pub fn name_color(name: &str) -> u8 {
    let hash = name_key(name).bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    PALETTE[hash as usize % PALETTE.len()]
}

/// `name` in bold and its color, then back to the default style.
pub fn paint_name(name: &str) -> String {
    format!("\x1b[1;{}m{name}\x1b[0m", name_color(name))
}

/// `text` dimmed, for what matters less than the words (timestamps).
pub fn dim(text: &str) -> String {
    format!("\x1b[2m{text}\x1b[0m")
}

/// `text` in red, for errors.
pub fn alarm(text: &str) -> String {
    format!("\x1b[31m{text}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_color_from_run_to_run() {
        // Pinned: a change of hash or palette would recolor everyone.
        assert_eq!(name_color("alice"), 96);
        assert_eq!(name_color("bob"), 36);
        assert_eq!(name_color("carol"), 34);
    }

    #[test]
    fn letter_case_does_not_change_the_color() {
        assert_eq!(name_color("Alice"), name_color("alice"));
        assert_eq!(name_color("BOB"), name_color("bob"));
    }

    #[test]
    fn colors_come_from_the_palette_and_vary() {
        let names = [
            "alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi",
        ];
        let colors: std::collections::BTreeSet<u8> = names.iter().map(|n| name_color(n)).collect();
        assert!(colors.iter().all(|c| PALETTE.contains(c)));
        assert!(
            colors.len() >= 4,
            "eight names share too few colors: {colors:?}"
        );
    }

    #[test]
    fn errors_keep_red_to_themselves() {
        assert!(!PALETTE.contains(&31) && !PALETTE.contains(&91));
    }

    #[test]
    fn painted_names_reset_the_style() {
        let painted = paint_name("bob");
        assert!(painted.starts_with("\x1b[1;") && painted.ends_with("bob\x1b[0m"));
    }
}
