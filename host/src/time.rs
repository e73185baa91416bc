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
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
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
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().expect("digits");
    let (y, mo, d, h, mi, s) = (n(0..4), n(4..6), n(6..8), n(9..11), n(11..13), n(13..15));
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return Err(format!("'{text}' is not a valid date and time"));
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
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
