//! RFC 3339 UTC timestamps with nanoseconds, as CRI logs and the exit file
//! carry them (`2026-11-26T10:38:15.123456789Z`): written by the monitor,
//! read back by the daemon.

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of
/// `civil_from_days`, Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, mo: i64, da: i64) -> i64 {
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 with nanoseconds, UTC: `2026-11-26T10:38:15.123456789Z`.
pub fn rfc3339_nano(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub fn now_rfc3339_nano() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nano(now.as_secs() as i64, now.subsec_nanos())
}

/// Unix nanoseconds of an RFC 3339 UTC timestamp
/// (`2024-01-02T03:04:05.123456789Z`, fraction optional).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let ns: i64 = frac.parse().ok()?;
    let days = days_from_civil(y, mo, da);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_795_689_495, 123_456_789),
            "2026-11-26T10:38:15.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(rfc3339_nano(-1, 0), "1969-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("2024-03-01T12:34:56.123456789Z"),
            Some(1_709_296_496_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2000-01-01T00:00:01.5Z"),
            Some(946_684_801_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("garbage"), None);
    }

    #[test]
    fn round_trip() {
        for (s, n) in [(0i64, 0u32), (1_795_689_495, 123_456_789), (951_782_400, 5)] {
            let text = rfc3339_nano(s, n);
            assert_eq!(
                parse_rfc3339_ns(&text),
                Some(s * 1_000_000_000 + n as i64),
                "{text}"
            );
        }
    }
}
