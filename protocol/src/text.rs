//! What may appear in a name, a room name or a text.

/// Longest name, in characters (names are ASCII, so also in bytes).
pub const MAX_NAME_LEN: usize = 32;

/// Longest room name, in characters, its `#` included.
pub const MAX_ROOM_LEN: usize = 1 + MAX_NAME_LEN;

/// The first character of `s` that must never reach another user's terminal,
/// if any.
///
/// These are the contract's control characters (C0 except TAB, DEL, C1) and,
/// as a careful server's choice, the Unicode bidirectional embedding, override
/// and isolate controls, which can make a line display as something other than
/// what it says ("Trojan Source").
pub fn forbidden_char(s: &str) -> Option<char> {
    s.chars().find(|&c| is_forbidden(c))
}

/// What a forbidden character is, for a `bad-text` detail: a control
/// character is called one, a bidirectional control by its own kind and
/// name (`bidirectional-override character U+202E (RIGHT-TO-LEFT
/// OVERRIDE)`), so that whoever pasted it learns what to look for.
pub fn forbidden_char_description(c: char) -> String {
    let code = c as u32;
    let bidi = match c {
        '\u{202a}' => Some(("embedding", "LEFT-TO-RIGHT EMBEDDING")),
        '\u{202b}' => Some(("embedding", "RIGHT-TO-LEFT EMBEDDING")),
        '\u{202c}' => Some(("formatting", "POP DIRECTIONAL FORMATTING")),
        '\u{202d}' => Some(("override", "LEFT-TO-RIGHT OVERRIDE")),
        '\u{202e}' => Some(("override", "RIGHT-TO-LEFT OVERRIDE")),
        '\u{2066}' => Some(("isolate", "LEFT-TO-RIGHT ISOLATE")),
        '\u{2067}' => Some(("isolate", "RIGHT-TO-LEFT ISOLATE")),
        '\u{2068}' => Some(("isolate", "FIRST STRONG ISOLATE")),
        '\u{2069}' => Some(("isolate", "POP DIRECTIONAL ISOLATE")),
        _ => None,
    };
    match bidi {
        Some((kind, name)) => format!("bidirectional-{kind} character U+{code:04X} ({name})"),
        None => format!("control character U+{code:04X}"),
    }
}

fn is_forbidden(c: char) -> bool {
    match c {
        '\t' => false,
        '\u{00}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// Whether `name` follows the naming rules: 1 to 32 ASCII letters, digits,
/// `_`, `-` or `.`, starting with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The form under which names are compared and sorted: `Alice` and `alice`
/// are the same user.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Whether `room` follows the room rules: `#`, then what a name may be (1 to
/// 32 ASCII letters, digits, `_`, `-` or `.`, starting with a letter or digit).
///
/// A name never starts with `#`, so the two can share a frame position.
pub fn is_valid_room(room: &str) -> bool {
    room.strip_prefix('#').is_some_and(is_valid_name)
}

/// The form under which room names are compared and sorted: `#Rust` and
/// `#rust` are the same room.
pub fn room_key(room: &str) -> String {
    room.to_ascii_lowercase()
}

/// Whether a text is empty for `MSG`: nothing, or spaces only.
pub fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in [
            "a",
            "A",
            "7",
            "alice",
            "Bob_2",
            "x.y-z",
            "a__",
            &"a".repeat(32),
        ] {
            assert!(is_valid_name(good), "{good:?} should be valid");
        }
        for bad in [
            "",
            "_a",
            "-a",
            ".a",
            "a b",
            "a!",
            "é",
            "aé",
            &"a".repeat(33),
            "a\t",
        ] {
            assert!(!is_valid_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn rooms_follow_the_rules() {
        for good in [
            "#a",
            "#7",
            "#rust",
            "#ops-2",
            "#Rust.lang_x",
            &format!("#{}", "a".repeat(32)),
        ] {
            assert!(is_valid_room(good), "{good:?} should be valid");
        }
        for bad in [
            "",
            "#",
            "rust",
            "##rust",
            "#_a",
            "#-a",
            "#.a",
            "#a b",
            "#a!",
            "#é",
            " #a",
            "#a ",
            &format!("#{}", "a".repeat(33)),
        ] {
            assert!(!is_valid_room(bad), "{bad:?} should be invalid");
        }
        assert_eq!(MAX_ROOM_LEN, 33);
    }

    #[test]
    fn room_keys_fold_ascii_case() {
        assert_eq!(room_key("#RuSt"), "#rust");
        assert_eq!(room_key("#Rust"), room_key("#rUST"));
    }

    #[test]
    fn control_characters_are_forbidden_but_tab_is_not() {
        assert_eq!(forbidden_char("hello\tworld"), None);
        assert_eq!(forbidden_char("héllo wörld ✓"), None);
        for c in [
            '\0', '\x07', '\x08', '\x1b', '\r', '\x7f', '\u{80}', '\u{9b}', '\u{9f}',
        ] {
            let s = format!("a{c}b");
            assert_eq!(forbidden_char(&s), Some(c), "{c:?}");
        }
    }

    #[test]
    fn bidi_controls_are_forbidden() {
        for c in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            assert_eq!(forbidden_char(&format!("x{c}")), Some(c));
        }
        assert_eq!(
            forbidden_char("\u{200f}"),
            None,
            "RLM is a mark, not an override"
        );
    }

    #[test]
    fn forbidden_characters_are_called_what_they_are() {
        assert_eq!(
            forbidden_char_description('\u{202e}'),
            "bidirectional-override character U+202E (RIGHT-TO-LEFT OVERRIDE)"
        );
        assert_eq!(
            forbidden_char_description('\u{2066}'),
            "bidirectional-isolate character U+2066 (LEFT-TO-RIGHT ISOLATE)"
        );
        assert_eq!(
            forbidden_char_description('\u{202a}'),
            "bidirectional-embedding character U+202A (LEFT-TO-RIGHT EMBEDDING)"
        );
        assert_eq!(
            forbidden_char_description('\x07'),
            "control character U+0007"
        );
        assert_eq!(
            forbidden_char_description('\u{9b}'),
            "control character U+009B"
        );
        for c in ('\u{0}'..='\u{10ffff}').filter(|&c| is_forbidden(c)) {
            let description = forbidden_char_description(c);
            let bidi =
                ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c);
            assert_eq!(
                description.starts_with("bidirectional-"),
                bidi,
                "{description}"
            );
        }
    }

    #[test]
    fn keys_fold_ascii_case() {
        assert_eq!(name_key("AlIcE"), "alice");
    }

    #[test]
    fn blank_means_spaces_only() {
        assert!(is_blank(""));
        assert!(is_blank("   "));
        assert!(!is_blank(" \t"));
        assert!(!is_blank(" x "));
    }
}
