//! RFC 3339 timestamps to Unix milliseconds and back, and `--since` values (a timestamp
//! or a Go-style duration before now), without a date crate.

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (a space for `T` accepted).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let padded = format!("{:0<3}", &frac[..frac.len().min(3)]);
        ms = padded.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let m = oh * 60 + om;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

// Howard Hinnant's days-from-civil (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-26T05:00:00Z`, or `2h` meaning two hours before `now_ms`.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(t) = parse_rfc3339_ms(s) {
        return Ok(t);
    }
    match mcp_tunnel_net::duration::parse_duration(s) {
        Ok(d) => Ok(now_ms - d.as_millis() as i64),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-26T05:00:00Z) nor a duration before now (2h, 90m)"
        )),
    }
}

pub fn now_ms() -> i64 {
    mcp_tunnel_control::time::now_ms()
}

pub fn fmt_ms(ms: i64) -> String {
    mcp_tunnel_control::time::rfc3339_ms(ms)
}

/// The first RFC 3339 timestamp in a log line: the `timestamp`/`time`/`ts` field of a
/// JSON object, else a leading or embedded timestamp (Compose's `--timestamps` prefix).
pub fn line_time_ms(line: &str) -> Option<i64> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        for k in ["timestamp", "time", "ts"] {
            if let Some(t) = v.get(k).and_then(|t| t.as_str()).and_then(parse_rfc3339_ms) {
                return Some(t);
            }
        }
    }
    // Scan tokens; JSON embedded after a prefix is tried as well.
    for tok in line.split_whitespace() {
        if tok.len() >= 20
            && tok.as_bytes()[0].is_ascii_digit()
            && let Some(t) = parse_rfc3339_ms(tok.trim_end_matches([',', '"']))
        {
            return Some(t);
        }
    }
    line.find('{').and_then(|i| {
        if i > 0 {
            line_time_ms(&line[i..])
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.123Z"),
            Some(951_782_400_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T04:34:19.5+01:00"),
            Some(1_795_667_659_500 - 3_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T04:34:19.123456789Z"),
            Some(1_795_667_659_123)
        );
        for bad in [
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T04:34:19",
            "x026-11-26T04:34:19Z",
            "2026-11-26T04:34:19Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(fmt_ms(1_795_667_659_123), "2026-11-26T04:34:19.123Z");
    }

    #[test]
    fn since_and_line_times() {
        assert_eq!(parse_since("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 5), Ok(1000));
        assert!(parse_since("yesterday", 0).is_err());
        assert_eq!(
            line_time_ms(r#"{"timestamp":"1970-01-01T00:00:02Z","message":"x"}"#),
            Some(2000)
        );
        assert_eq!(
            line_time_ms(r#"mcp-proxy-1  | 1970-01-01T00:00:03.000000000Z {"message":"x"}"#),
            Some(3000)
        );
        assert_eq!(line_time_ms("no time here"), None);
    }
}
