//! The `<time>` of a `HIST` frame: when the server accepted a message.
//!
//! The wire form is UTC RFC 3339 with milliseconds,
//! `2026-11-29T12:00:00.123Z`, so the value keeps exactly milliseconds: what
//! is formatted parses back to the same value.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, to the millisecond, between 1970 and the end of 9999
/// (the years RFC 3339's four digits can write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: u64,
}

/// The first millisecond of the year 10000, which RFC 3339 cannot write.
const END_MILLIS: u64 = 253_402_300_800_000;

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { unix_millis: 0 };

    /// 9999-12-31T23:59:59.999Z, the last time the wire form can carry.
    pub const MAX: Timestamp = Timestamp {
        unix_millis: END_MILLIS - 1,
    };

    /// Now, by the system clock, cut to the millisecond (a clock outside the
    /// writable years is taken as the nearest end of them).
    pub fn now() -> Timestamp {
        Timestamp::saturating_from(SystemTime::now())
    }

    /// `time` cut to the millisecond, or `None` before 1970 or after 9999.
    pub fn from_system_time(time: SystemTime) -> Option<Timestamp> {
        let millis = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
        u64::try_from(millis)
            .ok()
            .and_then(Timestamp::from_unix_millis)
    }

    /// The time `millis` milliseconds after 1970-01-01, or `None` after 9999.
    pub fn from_unix_millis(millis: u64) -> Option<Timestamp> {
        (millis < END_MILLIS).then_some(Timestamp {
            unix_millis: millis,
        })
    }

    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub fn unix_millis(self) -> u64 {
        self.unix_millis
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_millis)
    }

    fn saturating_from(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Err(_) => Timestamp::UNIX_EPOCH,
            Ok(since) => Timestamp {
                unix_millis: u64::try_from(since.as_millis())
                    .unwrap_or(u64::MAX)
                    .min(Timestamp::MAX.unix_millis),
            },
        }
    }
}

/// The wire form, `2026-11-29T12:00:00.123Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In range by construction, so humantime never refuses it.
        humantime::format_rfc3339_millis(self.to_system_time()).fmt(f)
    }
}

/// A `<time>` that is not an RFC 3339 UTC time between 1970 and 9999.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTimestamp(pub String);

impl fmt::Display for BadTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3339 UTC time: {:?}", self.0)
    }
}

impl std::error::Error for BadTimestamp {}

/// Reads the wire form back. Any RFC 3339 UTC time is accepted (`Z` or
/// `+00:00`, any number of fraction digits); digits past the millisecond are
/// dropped.
impl FromStr for Timestamp {
    type Err = BadTimestamp;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339(s)
            .ok()
            .and_then(Timestamp::from_system_time)
            .ok_or_else(|| BadTimestamp(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        let t = Timestamp::from_unix_millis(1_795_953_600_123).unwrap();
        assert_eq!(t.to_string(), "2026-11-29T12:00:00.123Z");
        assert_eq!(
            Timestamp::UNIX_EPOCH.to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for text in [
            "2026-11-29T12:00:00.123Z",
            "2026-11-29T12:00:03.456Z",
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let t: Timestamp = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn other_rfc3339_utc_forms_are_read_to_the_millisecond() {
        let t: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-29T12:00:00.000Z");
        let t: Timestamp = "2026-11-29T12:00:00.123999+00:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-29T12:00:00.123Z");
    }

    #[test]
    fn refuses_what_is_not_a_utc_time() {
        for text in [
            "",
            "now",
            "2026-11-29",
            "2026-11-29 12:00:00.123",
            "2026-11-29T12:00:00.123+01:00",
            "2026-13-01T00:00:00.000Z",
            "2026-11-29T12:00:00.1x3Z",
            "1969-12-31T23:59:59.999Z",
            "2026-11-29T12:00:00.123Zé",
        ] {
            assert!(text.parse::<Timestamp>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn system_times_are_cut_to_the_millisecond_and_bounded() {
        let t = UNIX_EPOCH + Duration::new(1, 2_999_999);
        assert_eq!(
            Timestamp::from_system_time(t).map(Timestamp::unix_millis),
            Some(1_002)
        );
        assert_eq!(
            Timestamp::from_system_time(UNIX_EPOCH - Duration::from_secs(1)),
            None
        );
        assert_eq!(Timestamp::from_unix_millis(END_MILLIS), None);
        assert_eq!(
            Timestamp::saturating_from(UNIX_EPOCH + Duration::from_millis(END_MILLIS + 5)),
            Timestamp::MAX
        );
        assert!(Timestamp::now() > Timestamp::UNIX_EPOCH);
    }
}
