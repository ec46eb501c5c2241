//! Fuzz target `cron`: cron expressions in a time zone. The input is `<expr>\n<zone>\n<unix
//! seconds>` (zone `UTC` and a fixed instant when absent). An expression that parses must
//! always name a later instant: next ticks are strictly increasing, from any start.

use chrono::{DateTime, TimeZone, Utc};
use molecule_host::schedules::cron::{CronSchedule, parse_zone};

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let expr = lines.next().unwrap_or_default();
    let zone = lines.next().unwrap_or("UTC");
    let _ = parse_zone(zone);
    let Ok(schedule) = CronSchedule::parse(expr, zone) else {
        return;
    };
    let mut starts = vec![Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap()];
    if let Some(at) = lines
        .next()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
    {
        starts.push(at);
    }
    for start in starts {
        let ticks = schedule.upcoming(start, 4);
        let mut previous = start;
        for tick in ticks {
            assert!(
                tick > previous,
                "{expr:?} in {zone}: {tick} is not after {previous}"
            );
            previous = tick;
        }
    }
}
