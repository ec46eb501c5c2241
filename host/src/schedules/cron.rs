//! Cron expressions in a time zone: parsed once at the edge into a [`CronSchedule`], which can
//! only say when it fires next.
//!
//! Parsing and evaluation are `croner`'s (5 fields, or 6 with seconds first; `@hourly`-style
//! macros; `L`, `#` and `W`), the zone database `chrono-tz`'s. Times are searched in the zone's
//! wall clock and moved in real time, so daylight-saving transitions behave like cron: a fixed
//! time inside a spring-forward gap fires once, just after the gap; a fixed time inside a
//! fall-back overlap fires once, at its first occurrence.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The longest cron expression accepted (a real one is a few dozen characters).
const MAX_EXPR_LEN: usize = 200;

/// Why an expression or a zone was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron_expr is invalid: {0}")]
    Expression(String),
    #[error("timezone is not a known IANA time zone: {0}")]
    Zone(String),
}

impl CronError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            CronError::Expression(_) => "cron_expr",
            CronError::Zone(_) => "timezone",
        }
    }
}

/// A valid cron expression evaluated in a valid zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

/// Parses an IANA zone name (`UTC`, `Europe/Berlin`).
pub fn parse_zone(zone: &str) -> Result<Tz, CronError> {
    let trimmed = zone.trim();
    if trimmed.is_empty() || trimmed.len() > 64 {
        return Err(CronError::Zone(
            "expected a name such as Europe/Berlin".into(),
        ));
    }
    trimmed
        .parse::<Tz>()
        .map_err(|_| CronError::Zone(format!("{trimmed:?} is not in the zone database")))
}

impl CronSchedule {
    /// Parses `expr` (5 or 6 fields, or a macro) for the zone named `zone`.
    pub fn parse(expr: &str, zone: &str) -> Result<CronSchedule, CronError> {
        let zone = parse_zone(zone)?;
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(CronError::Expression("it is empty".into()));
        }
        if expr.len() > MAX_EXPR_LEN {
            return Err(CronError::Expression(format!(
                "longer than {MAX_EXPR_LEN} characters"
            )));
        }
        // croner reads an empty list item (`,` as the seconds field) as a field that matches
        // nothing, and then searches for a tick that cannot come for minutes on end (found by
        // the `cron` fuzz target): no cron accepts an empty item, so neither do we.
        if expr
            .split_whitespace()
            .any(|field| field.split(',').any(str::is_empty))
        {
            return Err(CronError::Expression(
                "a field has an empty list item".into(),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|err| CronError::Expression(err.to_string()))?;
        let schedule = CronSchedule { cron, zone };
        // An expression that can never match (`0 0 30 2 *`) is refused here, not at its first
        // fire.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(CronError::Expression("it never matches a date".into()));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `after`, or `None` when there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` ticks after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            out.push(next);
            at = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Every tick of `schedule` in `[from, to)`.
    fn ticks(schedule: &CronSchedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (mut at, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        // `next_after` is strict: step back a second so a tick at `from` itself counts.
        at -= chrono::Duration::seconds(1);
        while let Some(next) = schedule.next_after(at) {
            if next >= end {
                break;
            }
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn five_and_six_field_expressions_and_macros_parse() {
        let five = CronSchedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            five.next_after(utc("2026-03-01T10:07:00Z")),
            Some(utc("2026-03-01T10:15:00Z"))
        );
        let six = CronSchedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(utc("2026-03-01T10:07:03Z")),
            Some(utc("2026-03-01T10:07:10Z"))
        );
        let hourly = CronSchedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(
            hourly.next_after(utc("2026-03-01T10:07:00Z")),
            Some(utc("2026-03-01T11:00:00Z"))
        );
        let daily = CronSchedule::parse("@daily", "Europe/Berlin").unwrap();
        assert_eq!(
            daily.next_after(utc("2026-03-01T10:07:00Z")),
            Some(utc("2026-03-01T23:00:00Z")),
            "midnight in Berlin is 23:00 UTC in winter"
        );
    }

    #[test]
    fn invalid_expressions_and_zones_name_their_field() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "not cron",
            "@often",
        ] {
            let err = CronSchedule::parse(bad, "UTC").unwrap_err();
            assert_eq!(err.field(), "cron_expr", "{bad:?}: {err}");
            assert!(err.to_string().starts_with("cron_expr"), "{err}");
        }
        let never = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(never.field(), "cron_expr", "{never}");
        for bad in ["", "Mars/Olympus", "UTC+25", "Europe/"] {
            let err = CronSchedule::parse("* * * * *", bad).unwrap_err();
            assert_eq!(err.field(), "timezone", "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_0230_schedule_fires_once_on_the_spring_forward_day() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let ny = CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
        let fired = ticks(&ny, "2026-03-08T05:00:00Z", "2026-03-09T05:00:00Z");
        assert_eq!(fired.len(), 1, "{fired:?}");
        // Just after the gap: 03:00 EDT is 07:00 UTC.
        assert_eq!(fired[0], utc("2026-03-08T07:00:00Z"));
        // The days around it fire at 02:30 local as usual.
        assert_eq!(
            ticks(&ny, "2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z"),
            vec![utc("2026-03-07T07:30:00Z")]
        );
        assert_eq!(
            ticks(&ny, "2026-03-09T04:00:00Z", "2026-03-10T04:00:00Z"),
            vec![utc("2026-03-09T06:30:00Z")]
        );
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let berlin = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fired = ticks(&berlin, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z");
        assert_eq!(fired.len(), 1, "{fired:?}");
    }

    #[test]
    fn a_0130_schedule_fires_once_on_the_fall_back_day() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let ny = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let fired = ticks(&ny, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z");
        assert_eq!(
            fired,
            vec![utc("2026-11-01T05:30:00Z")],
            "the first 01:30 only"
        );
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let berlin = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fired = ticks(&berlin, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z");
        assert_eq!(fired, vec![utc("2026-10-25T00:30:00Z")]);
    }

    #[test]
    fn an_hourly_schedule_keeps_real_hours_across_both_transitions() {
        let ny = CronSchedule::parse("0 * * * *", "America/New_York").unwrap();
        // The spring-forward day has 23 hours, the fall-back day 25.
        assert_eq!(
            ticks(&ny, "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z").len(),
            23
        );
        assert_eq!(
            ticks(&ny, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z").len(),
            25
        );
    }

    #[test]
    fn after_downtime_the_next_tick_is_the_first_in_the_future() {
        let every_minute = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let now = utc("2026-03-01T10:07:30Z");
        assert_eq!(
            every_minute.next_after(now),
            Some(utc("2026-03-01T10:08:00Z"))
        );
        assert_eq!(
            every_minute.upcoming(now, 3),
            vec![
                utc("2026-03-01T10:08:00Z"),
                utc("2026-03-01T10:09:00Z"),
                utc("2026-03-01T10:10:00Z")
            ]
        );
    }
}
