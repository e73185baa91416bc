//! Time in Keyward: Unix seconds inside, Fortanix DSM's `YYYYMMDDTHHMMSSZ` at the API, and a
//! clock that tests can drive.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The source of "now" for everything that depends on dates (key states, sessions, audit).
/// Servers take one as a parameter so tests advance time instead of sleeping.
#[derive(Clone, Debug)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// Real time.
    pub fn system() -> Clock {
        Clock {
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// `20260101T000000Z` for a Unix time.
pub fn format_dsm(secs: i64) -> String {
    utc(secs).format("%Y%m%dT%H%M%SZ").to_string()
}

/// `2026-01-01T00:00:00Z` (RFC 3339, as Standard Webhooks payloads carry it).
pub fn format_rfc3339(secs: i64) -> String {
    utc(secs).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn utc(secs: i64) -> chrono::DateTime<chrono::Utc> {
    // Clamped like DSM's times (which stop at the year 9999) rather than failing.
    chrono::DateTime::from_timestamp(secs.clamp(0, 253_402_300_799), 0).expect("in range")
}

/// Parses `YYYYMMDDTHHMMSSZ` (DSM's format). The error says what is wrong.
pub fn parse_dsm(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape_ok {
        return Err(format!(
            "'{text}' is not a time in the form YYYYMMDDTHHMMSSZ"
        ));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc().timestamp())
        .map_err(|_| format!("'{text}' is not a valid date and time"))
}

/// Parses an HTML `datetime-local` value (`2026-01-01T00:00`, seconds optional), read as
/// UTC: what the console's date fields send.
pub fn parse_form(text: &str) -> Result<i64, String> {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp())
        .ok_or_else(|| format!("'{text}' is not a date and time (YYYY-MM-DDTHH:MM, UTC)"))
}

/// A Unix time as an HTML `datetime-local` value (UTC).
pub fn format_form(secs: i64) -> String {
    utc(secs).format("%Y-%m-%dT%H:%M").to_string()
}

/// Serde for times stored or sent as DSM strings (`#[serde(with = "crate::time::dsm_opt")]`).
pub mod dsm_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_dsm(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::parse_dsm(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsm_times_round_trip() {
        for secs in [
            0,
            951_782_400,
            1_767_225_600,
            1_767_225_600 + 86_399,
            4_102_444_800,
        ] {
            assert_eq!(parse_dsm(&format_dsm(secs)).unwrap(), secs);
        }
        assert_eq!(format_dsm(1_767_225_600), "20260101T000000Z");
        assert_eq!(parse_dsm("20000229T120000Z").unwrap(), 951_825_600);
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in [
            "2026-01-01",
            "20260230T000000Z",
            "20261301T000000Z",
            "20260101T250000Z",
            "20260101T000000",
            "2026010xT000000Z",
        ] {
            assert!(parse_dsm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_clock_advances() {
        let c = Clock::system();
        let clone = c.clone();
        let before = c.now();
        clone.advance(3600);
        assert!(c.now() >= before + 3600);
    }
}
