//! The arguments of version 3: passwords and durations.

use std::fmt;
use std::time::Duration;

/// The shortest and longest password, in bytes of UTF-8.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;
/// The longest ban or mute.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What to tell a user whose new password breaks the rules.
pub const PASSWORD_RULES: &str =
    "a password is one word of 8 to 128 bytes, without spaces or control characters";
/// What to tell a user whose duration breaks the rules.
pub const DURATION_RULES: &str =
    "a duration is a number and a unit, s, m, h or d (90s, 10m, 7d), from 1 second to 365 days";

/// A password as a client sent it, which may break the rules (a login with
/// such a password is simply wrong). Its `Debug` never shows it, so that no
/// log of a frame can leak one.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for hashing and for the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it follows the rules: one token of 8 to 128 bytes of UTF-8
    /// with no space and no control character.
    pub fn is_acceptable(&self) -> bool {
        PASSWORD_LEN.contains(&self.0.len())
            && crate::text::forbidden_char(&self.0).is_none()
            && !self.0.chars().any(|c| c == ' ' || c.is_control())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Parses a `<duration>`: a decimal number and one unit, `s`, `m`, `h` or
/// `d`, from 1 second to 365 days.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let seconds_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || number.len() > 12 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = number.parse::<u64>().ok()?.checked_mul(seconds_per)?;
    let duration = Duration::from_secs(seconds);
    (seconds >= 1 && duration <= MAX_DURATION).then_some(duration)
}

/// Writes a duration back in its largest whole unit (`600s` is `10m`).
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    for (unit, per) in [('d', 86_400), ('h', 3600), ('m', 60)] {
        if seconds.is_multiple_of(per) {
            return format!("{}{unit}", seconds / per);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_follow_the_rules() {
        assert!(Password::new("12345678").is_acceptable());
        assert!(!Password::new("1234567").is_acceptable());
        assert!(Password::new("x".repeat(128)).is_acceptable());
        assert!(!Password::new("x".repeat(129)).is_acceptable());
        assert!(!Password::new("has space").is_acceptable());
        assert!(!Password::new("tab\there!").is_acceptable());
        assert!(!Password::new("bell\u{7}bell").is_acceptable());
        assert!(Password::new("éééé").is_acceptable(), "8 bytes of UTF-8");
        assert!(!Password::new("abc\u{202e}defgh").is_acceptable());
    }

    #[test]
    fn a_password_never_shows_in_debug() {
        let frame = format!("{:?}", Password::new("hunter22"));
        assert!(!frame.contains("hunter22"));
    }

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("365d"), Some(MAX_DURATION));
        for bad in [
            "",
            "s",
            "0s",
            "366d",
            "10",
            "10x",
            "1.5h",
            "-1m",
            " 1m",
            "1 m",
            "99999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
    }
}
