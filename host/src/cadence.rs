//! When recurring things fall due: every N days, every N months, or a cron expression in a
//! time zone. Rotation policies and cron jobs store one of these and the scheduler asks it
//! for the next time after a given one; nothing here keeps state or reads a clock.
//!
//! Cron expressions take the usual five fields (minute hour day-of-month month day-of-week),
//! or six with seconds first, or the `@daily`-style shorthands. Times are evaluated in the
//! given IANA time zone, so "02:30 every day in Europe/Berlin" follows daylight saving time.

use std::str::FromStr;

use chrono::{DateTime, Months, TimeZone, Utc};
use chrono_tz::Tz;

/// Longest interval accepted (about a hundred years), so that due times stay representable.
pub const MAX_DAYS: u32 = 36_500;
pub const MAX_MONTHS: u32 = 1_200;

#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    Days(u32),
    Months(u32),
    Cron(Box<Cron>),
}

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    expression: String,
    time_zone: Tz,
    schedule: cron::Schedule,
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.time_zone == other.time_zone
    }
}

/// What is wrong with a cadence, in words for the API's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CadenceError(pub String);

impl Cadence {
    pub fn days(n: u32) -> Result<Cadence, CadenceError> {
        if n == 0 || n > MAX_DAYS {
            return Err(CadenceError(format!(
                "interval_days must be 1 to {MAX_DAYS}"
            )));
        }
        Ok(Cadence::Days(n))
    }

    pub fn months(n: u32) -> Result<Cadence, CadenceError> {
        if n == 0 || n > MAX_MONTHS {
            return Err(CadenceError(format!(
                "interval_months must be 1 to {MAX_MONTHS}"
            )));
        }
        Ok(Cadence::Months(n))
    }

    /// The first due time strictly after `t` (Unix seconds); `None` if the schedule never
    /// fires again.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            Cadence::Days(n) => t.checked_add(i64::from(*n) * 86_400),
            Cadence::Months(n) => {
                let at = DateTime::<Utc>::from_timestamp(t, 0)?;
                at.checked_add_months(Months::new(*n))
                    .map(|d| d.timestamp())
            }
            Cadence::Cron(c) => c.next_after(t),
        }
    }
}

impl Cron {
    pub fn parse(expression: &str, time_zone: &str) -> Result<Cron, CadenceError> {
        let tz = Tz::from_str(time_zone).map_err(|_| {
            CadenceError(format!(
                "'{time_zone}' is not an IANA time zone (for example UTC or Europe/Berlin)"
            ))
        })?;
        let trimmed = expression.trim();
        // The cron crate wants seconds first; the common five-field form fires at second 0.
        let fields = trimmed.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {trimmed}")
        } else {
            trimmed.to_string()
        };
        let schedule = cron::Schedule::from_str(&full).map_err(|e| {
            CadenceError(format!(
                "'{expression}' is not a cron expression (minute hour day-of-month month day-of-week): {e}"
            ))
        })?;
        let c = Cron {
            expression: trimmed.to_string(),
            time_zone: tz,
            schedule,
        };
        if c.next_after(0).is_none() {
            return Err(CadenceError(format!("'{expression}' never fires")));
        }
        Ok(c)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn time_zone(&self) -> &str {
        self.time_zone.name()
    }

    pub fn next_after(&self, t: i64) -> Option<i64> {
        let at = self.time_zone.timestamp_opt(t, 0).single()?;
        self.schedule.after(&at).next().map(|d| d.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn intervals_add_days_and_calendar_months() {
        let t = at("2026-01-31T10:00:00Z");
        assert_eq!(Cadence::days(1).unwrap().next_after(t), Some(t + 86_400));
        // January 31st plus one month is the last day of February.
        assert_eq!(
            Cadence::months(1).unwrap().next_after(t),
            Some(at("2026-02-28T10:00:00Z"))
        );
        assert!(Cadence::days(0).is_err());
        assert!(Cadence::months(5000).is_err());
    }

    #[test]
    fn cron_takes_five_fields_and_follows_the_time_zone() {
        let c = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Winter: 02:30 CET is 01:30 UTC.
        assert_eq!(
            c.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T01:30:00Z"))
        );
        // Summer: 02:30 CEST is 00:30 UTC.
        assert_eq!(
            c.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T00:30:00Z"))
        );
        let hourly = Cron::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T01:00:00Z"))
        );
        assert_eq!(hourly.expression(), "0 * * * *");
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let e = Cron::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.0.contains("not a cron expression"), "{e}");
        let e = Cron::parse("0 * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.0.contains("IANA"), "{e}");
    }
}
