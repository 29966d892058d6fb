//! Go-style durations (`30s`, `1m30s`, `1.5h`, `500ms`), because the configuration format
//! and its documentation come from a Go system whose operators already write them.
//!
//! [`parse_duration`] accepts what Go's `time.ParseDuration` accepts, minus negative values
//! (nothing we configure can be negative). The largest accepted value is Go's limit,
//! `i64::MAX` nanoseconds (about 292 years), so a value valid here is valid there too.
//! [`format_duration`] prints exactly what Go's `Duration.String` prints (`2160h0m0s`,
//! `1m30s`, `500ms`, `0s`), and its output always parses back to the same duration.

use std::time::Duration;

/// Why a duration string was refused. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration \"\": empty value (use a number with a unit, e.g. 30s)")]
    Empty,
    #[error("invalid duration \"{input}\": negative durations are not allowed")]
    Negative { input: String },
    #[error("invalid duration \"{input}\": missing unit (use one of ns, us, ms, s, m, h)")]
    MissingUnit { input: String },
    #[error(
        "invalid duration \"{input}\": unknown unit \"{unit}\" (use one of ns, us, ms, s, m, h)"
    )]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration \"{input}\": expected a number followed by a unit, e.g. 1m30s")]
    Syntax { input: String },
    #[error("invalid duration \"{input}\": too large (the maximum is about 292 years)")]
    Overflow { input: String },
}

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MIN: u64 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MIN;
/// Go's `time.Duration` is an `int64` of nanoseconds; staying within it keeps configs portable.
const MAX_NANOS: u64 = i64::MAX as u64;

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        _ => return None,
    })
}

/// Parses a Go-style duration: one or more `<number><unit>` terms, the number optionally
/// fractional (`1.5h`, `.5s`), units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. The lone string
/// `0` needs no unit. A leading `+` is accepted; a leading `-` is refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let mut rest = input;
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(DurationError::Negative {
            input: input.to_owned(),
        });
    }
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax(input));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (term_nanos, after) = parse_term(rest, input)?;
        total = total
            .checked_add(term_nanos)
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(|| overflow(input))?;
        rest = after;
    }
    Ok(Duration::from_nanos(total))
}

/// Parses one `<number><unit>` term from the front of `s`, returning its nanoseconds and the
/// remainder.
fn parse_term<'a>(s: &'a str, input: &str) -> Result<(u64, &'a str), DurationError> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_digits, mut rest) = s.split_at(int_len);
    let mut frac_digits = "";
    if let Some(r) = rest.strip_prefix('.') {
        let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
        (frac_digits, rest) = r.split_at(frac_len);
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        // Covers "s", ".s" and "1m.": a term needs at least one digit.
        return Err(syntax(input));
    }
    let unit_len = rest
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit() || *c == '.')
        .map_or(rest.len(), |(i, _)| i);
    let (unit, after) = rest.split_at(unit_len);
    if unit.is_empty() {
        return Err(DurationError::MissingUnit {
            input: input.to_owned(),
        });
    }
    let scale = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
        input: input.to_owned(),
        unit: unit.to_owned(),
    })?;

    let whole = int_digits
        .bytes()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(|| overflow(input))?;
    Ok((
        whole.saturating_add(fraction_nanos(frac_digits, scale)),
        after,
    ))
}

/// The nanoseconds contributed by the digits after the decimal point, truncated towards zero.
/// Digits beyond the 19th cannot change the result at nanosecond precision and are ignored,
/// which also keeps the arithmetic within `u128`.
fn fraction_nanos(digits: &str, scale: u64) -> u64 {
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for d in digits.bytes().take(19) {
        numerator = numerator * 10 + u128::from(d - b'0');
        denominator *= 10;
    }
    // numerator < denominator, so the quotient is below `scale` and fits in u64.
    u64::try_from(numerator * u128::from(scale) / denominator).unwrap_or(u64::MAX)
}

fn syntax(input: &str) -> DurationError {
    DurationError::Syntax {
        input: input.to_owned(),
    }
}

fn overflow(input: &str) -> DurationError {
    DurationError::Overflow {
        input: input.to_owned(),
    }
}

/// Formats a duration the way Go's `Duration.String` does: `0s`; below one second a single
/// unit with a decimal fraction (`1.5ms`, `250µs`, `42ns`); otherwise hours, minutes and
/// fractional seconds, leading zero units omitted (`30s`, `1m30s`, `2160h0m0s`, `1.5s`).
/// Durations beyond Go's range print the same way with larger hour counts.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sec = u128::from(NANOS_PER_SEC);
    if nanos < sec {
        let (value, unit, digits) = if nanos < u128::from(NANOS_PER_MICRO) {
            (nanos, "ns", 0)
        } else if nanos < u128::from(NANOS_PER_MILLI) {
            (nanos, "\u{b5}s", 3)
        } else {
            (nanos, "ms", 6)
        };
        return format!("{}{unit}", decimal(value, digits));
    }
    let secs_total = nanos / sec;
    let frac = nanos % sec;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let seconds = secs_total % 60;
    let secs_text = decimal(seconds * sec + frac, 9);
    if hours > 0 {
        format!("{hours}h{minutes}m{secs_text}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs_text}s")
    } else {
        format!("{secs_text}s")
    }
}

/// `value / 10^digits` written as a decimal with trailing fractional zeros removed.
fn decimal(value: u128, digits: u32) -> String {
    let divisor = 10u128.pow(digits);
    let int = value / divisor;
    let frac = value % divisor;
    if frac == 0 {
        return int.to_string();
    }
    let frac_text = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac_text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parses_go_examples() {
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2160h"), Duration::from_secs(2160 * 3600));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(ok("3\u{b5}s"), Duration::from_micros(3));
        assert_eq!(ok("3\u{3bc}s"), Duration::from_micros(3));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        // Digits past nanosecond precision truncate, as in Go.
        assert_eq!(ok("0.1234567899s"), Duration::from_nanos(123_456_789));
        // Repeated units are summed, as in Go.
        assert_eq!(ok("1s1s"), Duration::from_secs(2));
    }

    #[test]
    fn accepts_up_to_go_limit() {
        assert_eq!(ok("9223372036854775807ns"), Duration::from_nanos(MAX_NANOS));
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
    }

    #[test]
    fn refuses_bad_input() {
        type Check = fn(&DurationError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, DurationError::Empty)),
            ("-1s", |e| matches!(e, DurationError::Negative { .. })),
            ("-0", |e| matches!(e, DurationError::Negative { .. })),
            ("1", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("1m30", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("10x", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("1S", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("1 s", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("s", |e| matches!(e, DurationError::Syntax { .. })),
            (".s", |e| matches!(e, DurationError::Syntax { .. })),
            ("+", |e| matches!(e, DurationError::Syntax { .. })),
            ("1s.", |e| matches!(e, DurationError::Syntax { .. })),
            ("9223372036854775808ns", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
            ("2562048h", |e| matches!(e, DurationError::Overflow { .. })),
            ("99999999999999999999s", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
            ("2562047h2562047h", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
        ];
        for (input, check) in cases {
            let err = parse_duration(input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
            if !input.is_empty() {
                assert!(err.to_string().contains(&format!("\"{input}\"")), "{err}");
            }
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(2160 * 3600), "2160h0m0s"),
            (Duration::new(4_000, 500), "1h6m40.0000005s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }

    proptest! {
        #[test]
        fn format_round_trips(nanos in 0..=MAX_NANOS) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn never_panics_on_digit_soup(s in "[0-9.+hmsnuµ]{0,40}") {
            let _ = parse_duration(&s);
        }
    }
}
