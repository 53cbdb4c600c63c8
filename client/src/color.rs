//! One color per name, the same in every run and on every terminal, so that
//! a reader learns to recognise who is talking at a glance.
//!
//! The colors come from the 256-color palette, whose colors are the same
//! RGB values on every terminal that has it (unlike the 16 basic ones, which
//! each theme paints its own way, and where "cyan" and "bright cyan" are
//! near twins). They are chosen so that no two are easy to confuse: far
//! apart in hue and in CIELAB distance, and far from red, which marks
//! errors. All have a middle lightness, to read on dark and light
//! backgrounds alike.

use chat_protocol::name_key;

/// 256-color palette indices names are drawn from, in hue order: ochre,
/// green, teal, sky blue, cornflower blue, violet, pink.
const PALETTE: [u8; 7] = [136, 70, 36, 39, 69, 165, 205];

/// The palette index of `name`'s color.
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
    format!("\x1b[1;38;5;{}m{name}\x1b[0m", name_color(name))
}

/// `text` dimmed, for what matters less than the words (timestamps), or
/// belongs to the past (history).
pub fn dim(text: &str) -> String {
    format!("\x1b[2m{text}\x1b[0m")
}

/// `text` in bold, for what must not be missed (a direct message's `-> you`).
pub fn bold(text: &str) -> String {
    format!("\x1b[1m{text}\x1b[0m")
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
        assert_eq!(name_color("alice"), 205);
        assert_eq!(name_color("bob"), 39);
        assert_eq!(name_color("carol"), 36);
    }

    #[test]
    fn alice_and_bob_are_told_apart() {
        assert_ne!(name_color("alice"), name_color("bob"));
    }

    /// The sRGB value of a color of the 256-color palette's 6×6×6 cube,
    /// where every color of [`PALETTE`] lies.
    fn cube_rgb(index: u8) -> [f64; 3] {
        assert!(
            (16..232).contains(&index),
            "{index} is not in the color cube"
        );
        const LEVELS: [f64; 6] = [0.0, 95.0, 135.0, 175.0, 215.0, 255.0];
        let i = usize::from(index - 16);
        [LEVELS[i / 36], LEVELS[i / 6 % 6], LEVELS[i % 6]]
    }

    /// CIELAB (D65) of an sRGB color: distances in it follow how different
    /// colors look, which RGB distances do not.
    fn lab([r, g, b]: [f64; 3]) -> [f64; 3] {
        let linear = |c: f64| {
            let c = c / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        let (r, g, b) = (linear(r), linear(g), linear(b));
        let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
        let f = |t: f64| {
            if t > 0.008856 {
                t.cbrt()
            } else {
                7.787 * t + 16.0 / 116.0
            }
        };
        [
            116.0 * f(y) - 16.0,
            500.0 * (f(x) - f(y)),
            200.0 * (f(y) - f(z)),
        ]
    }

    /// How different two colors look (CIE76 ΔE): about 2 is just
    /// noticeable, past 30 they are different colors at a glance.
    fn delta_e(a: [f64; 3], b: [f64; 3]) -> f64 {
        let (a, b) = (lab(a), lab(b));
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    }

    /// The hue angle in degrees: two colors can differ in ΔE by lightness
    /// alone, and a lighter twin is still a twin.
    fn hue(rgb: [f64; 3]) -> f64 {
        let [_, a, b] = lab(rgb);
        b.atan2(a).to_degrees().rem_euclid(360.0)
    }

    fn hue_gap(a: [f64; 3], b: [f64; 3]) -> f64 {
        let gap = (hue(a) - hue(b)).abs();
        gap.min(360.0 - gap)
    }

    #[test]
    fn the_palette_has_no_near_twins() {
        for (i, &a) in PALETTE.iter().enumerate() {
            for &b in &PALETTE[i + 1..] {
                let (ra, rb) = (cube_rgb(a), cube_rgb(b));
                assert!(delta_e(ra, rb) >= 30.0, "{a} and {b} look alike");
                assert!(hue_gap(ra, rb) >= 25.0, "{a} and {b} have one hue");
            }
        }
        // Nor a twin of the red that marks errors (xterm's SGR 31).
        let red = [205.0, 0.0, 0.0];
        for &c in &PALETTE {
            assert!(delta_e(cube_rgb(c), red) >= 50.0, "{c} looks like red");
            assert!(hue_gap(cube_rgb(c), red) >= 40.0, "{c} has red's hue");
        }
    }

    #[test]
    fn the_old_palettes_twins_would_fail() {
        // Cyan and bright cyan, as xterm paints them: what alice and bob
        // got before.
        let (cyan, bright_cyan) = ([0.0, 205.0, 205.0], [0.0, 255.0, 255.0]);
        assert!(delta_e(cyan, bright_cyan) < 30.0 || hue_gap(cyan, bright_cyan) < 25.0);
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
    fn painted_names_reset_the_style() {
        let painted = paint_name("bob");
        assert_eq!(painted, "\x1b[1;38;5;39mbob\x1b[0m");
    }
}
