//! The JSON line format, written straight into the line buffer.
//!
//! The output is byte for byte what tracing-subscriber's
//! `.json().flatten_event(true).with_current_span(false).with_span_list(false)` writes
//! (log lines are an interface; `json_golden` compares the two), but without its cost:
//! that formatter sends every field through serde, formats `%`/`?` values into
//! temporary strings and escapes through an `io::Write` adaptor that re-validates UTF-8
//! on each of ~126 small writes per line — 22% of the proxy's instructions per request.
//! Here strings are escaped in one pass, writing unescaped runs as whole slices, and
//! `Display`/`Debug` values are escaped on the fly as they are formatted.
//!
//! Events bridged from the `log` crate carry their real target and level in `log.*`
//! fields that tracing-subscriber substitutes back; those rare lines go through the old
//! formatter so they stay exactly as they were.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, time};
use tracing_subscriber::registry::LookupSpan;

/// One JSON object per event: `timestamp`, `level`, the event's fields in recording order
/// (`message` among them), then `target`.
pub struct JsonLines {
    bridged: format::Format<Json, time::SystemTime>,
}

impl JsonLines {
    pub fn new() -> Self {
        Self { bridged: legacy() }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

/// tracing-subscriber's own JSON formatter, configured as this program always had it.
pub(crate) fn legacy() -> format::Format<Json, time::SystemTime> {
    format::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.fields().field("log.target").is_some() {
            return self.bridged.format_event(ctx, writer, event);
        }
        // Built in a buffer of our own, where each small write is an inlined `push_str`,
        // then handed over in one write (the `Writer` forwards each write through a
        // `dyn fmt::Write`). A `Display` impl that logs finds the buffer busy.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write_line(&mut line, event)?;
                let done = writer.write_str(&line);
                if line.capacity() > MAX_KEPT_LINE {
                    *line = String::new();
                }
                done
            }
            Err(_) => {
                let mut line = String::new();
                write_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

/// A line buffer larger than this (after a very long line) is not kept for the next.
const MAX_KEPT_LINE: usize = 64 << 10;

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

fn write_line(w: &mut String, event: &Event<'_>) -> fmt::Result {
    let meta = event.metadata();
    w.push_str("{\"timestamp\":\"");
    write_timestamp(w, SystemTime::now())?;
    w.push_str("\",\"level\":\"");
    w.push_str(level_name(meta.level()));
    w.push('"');
    let mut fields = Fields { w, state: Ok(()) };
    event.record(&mut fields);
    fields.state?;
    w.push_str(",\"target\":\"");
    write_escaped(w, meta.target())?;
    w.push_str("\"}\n");
    Ok(())
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Writes each field as `,"name":value`. A failed write (a `Display` impl returning an
/// error) stops the event: tracing-subscriber then reports the event as unformattable,
/// as it does for its own formatter.
struct Fields<'a, W: fmt::Write> {
    w: &'a mut W,
    state: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_str(",\"")?;
        write_escaped(self.w, field.name())?;
        self.w.write_str("\":")
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.state.is_ok() {
            self.state = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write_escaped(w, value)?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaping(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write_u64(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            write_u64(w, value.unsigned_abs())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's shortest round-trip form; JSON has no NaN or infinity.
        self.entry(field, |w| match serde_json::Number::from_f64(value) {
            Some(n) => write!(w, "{n}"),
            None => w.write_str("null"),
        });
    }
    // i128, u128, bytes and errors keep Visit's defaults (through `record_debug`), as
    // tracing-serde does: they come out as quoted strings.
}

/// A `fmt::Write` that JSON-escapes what passes through it.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// serde_json's escapes: `"` and `\`, the short forms `\b \t \n \f \r`, `\u00xx` (lower
/// case) for the other control characters; everything else (DEL, non-ASCII) as is.
fn write_escaped(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    const HEX: &str = "0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = next_to_escape(bytes, start);
        let Some(&b) = bytes.get(i) else { break };
        // Every escaped byte is ASCII, so `i` is a char boundary.
        if start < i {
            w.write_str(&s[start..i])?;
        }
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            _ => "",
        };
        if short.is_empty() {
            let (hi, lo) = (usize::from(b >> 4), usize::from(b & 0xf));
            w.write_str("\\u00")?;
            w.write_str(&HEX[hi..=hi])?;
            w.write_str(&HEX[lo..=lo])?;
        } else {
            w.write_str(short)?;
        }
        start = i + 1;
    }
    if start < bytes.len() {
        w.write_str(&s[start..])?;
    }
    Ok(())
}

fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first byte from `from` on that must be escaped, or `bytes.len()`.
/// Eight bytes at a time: most log text has nothing to escape, and a byte-by-byte scan
/// was the largest part of formatting a line.
fn next_to_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let x = u64::from_le_bytes(*chunk);
        // High bit set in each byte below 0x20, equal to `"` or equal to `\`. A borrow
        // can also flag a byte above a flagged one, never below, so the lowest flag is
        // the first byte to escape.
        let is_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let flags = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | is_zero(x ^ (ONES * u64::from(b'"')))
            | is_zero(x ^ (ONES * u64::from(b'\\')));
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| !must_escape(b)) {
        i += 1;
    }
    i.min(bytes.len())
}

fn write_u64(w: &mut impl fmt::Write, mut n: u64) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.write_str(std::str::from_utf8(&buf[i..]).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` of the second last formatted on this thread.
const NO_SECOND: i64 = i64::MIN;
thread_local! {
    static SECOND: Cell<(i64, [u8; 20])> = const { Cell::new((NO_SECOND, [0; 20])) };
}

/// tracing-subscriber's `SystemTime` format: RFC 3339 in UTC with microseconds and `Z`,
/// e.g. `2025-01-31T09:05:01.123456Z`. The date and time of day are formatted once per
/// second per thread; each line appends its microseconds.
pub(crate) fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let (secs, nanos) = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        // Before 1970: whole seconds round down, the fraction counts up from there.
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    let mut line = [0u8; 27];
    let cached = SECOND.with(|c| {
        let (s, prefix) = c.get();
        if s == secs {
            return Some(prefix);
        }
        let prefix = second_prefix(secs)?;
        c.set((secs, prefix));
        Some(prefix)
    });
    let Some(prefix) = cached else {
        return write_wide_year(w, secs, nanos);
    };
    line[..20].copy_from_slice(&prefix);
    let mut micros = nanos / 1_000;
    for d in line[20..26].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line[26] = b'Z';
    w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
}

/// Splits seconds since the epoch into (year, month, day, hour, minute, second), UTC.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400) as u32;
    // Days to civil date, counting in 400-year eras that start on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, tod / 3_600, tod / 60 % 60, tod % 60)
}

/// The cacheable part of a timestamp, or `None` for a year that is not four digits.
fn second_prefix(secs: i64) -> Option<[u8; 20]> {
    let (year, month, day, hour, minute, second) = civil(secs);
    let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
    let mut p = *b"0000-00-00T00:00:00.";
    let two = |p: &mut [u8; 20], at: usize, v: u32| {
        p[at] = b'0' + (v / 10) as u8;
        p[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut p, 0, year / 100);
    two(&mut p, 2, year % 100);
    two(&mut p, 5, month);
    two(&mut p, 8, day);
    two(&mut p, 11, hour);
    two(&mut p, 14, minute);
    two(&mut p, 17, second);
    Some(p)
}

/// Years past 9999 or before 0, written as tracing-subscriber writes them.
fn write_wide_year(w: &mut impl fmt::Write, secs: i64, nanos: u32) -> fmt::Result {
    let (year, month, day, hour, minute, second) = civil(secs);
    if year > 9999 {
        write!(w, "+{year}")?;
    } else {
        write!(w, "{year:05}")?;
    }
    write!(
        w,
        "-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:06}Z",
        nanos / 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(t: SystemTime) -> String {
        let mut s = String::new();
        write_timestamp(&mut s, t).unwrap();
        s
    }

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nanos)
        }
    }

    #[test]
    fn timestamps_at_calendar_edges() {
        // Expected values from Python's datetime.utcfromtimestamp.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1_999, "2000-02-29T00:00:00.000001Z"),
            (951_868_799, 999_999_999, "2000-02-29T23:59:59.999999Z"),
            (1_709_251_199, 500_000, "2024-02-29T23:59:59.000500Z"),
            (1_735_689_599, 123_456_789, "2024-12-31T23:59:59.123456Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
            (253_402_300_800, 0, "+10000-01-01T00:00:00.000000Z"),
            (-1, 500_000_000, "1969-12-31T23:59:59.500000Z"),
            (-86_400 * 365, 0, "1969-01-01T00:00:00.000000Z"),
        ];
        for (secs, nanos, want) in cases {
            assert_eq!(stamp(at(secs, nanos)), want, "{secs}s {nanos}ns");
            // Again, from the per-thread cache.
            assert_eq!(stamp(at(secs, nanos)), want, "{secs}s {nanos}ns cached");
        }
    }

    #[test]
    fn escapes_like_serde_json() {
        let mut all = String::new();
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            all.push(char::from_u32(c).unwrap());
        }
        let mut ours = String::from("\"");
        write_escaped(&mut ours, &all).unwrap();
        ours.push('"');
        assert_eq!(ours, serde_json::to_string(&all).unwrap());
    }

    #[test]
    fn finds_each_byte_to_escape_at_every_offset() {
        for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
            for len in 0..20 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    // Bytes that sit just past the special ones in value, and non-ASCII.
                    for (k, b) in bytes.iter_mut().enumerate() {
                        *b = [b'a', 0x20, b'#', b']', 0xc3, 0x7f][k % 6];
                    }
                    bytes[at] = special;
                    for from in 0..=at {
                        assert_eq!(next_to_escape(&bytes, from), at, "{bytes:?} from {from}");
                    }
                    assert_eq!(next_to_escape(&bytes, at + 1), len, "{bytes:?} after");
                }
            }
        }
    }

    #[test]
    fn random_text_escapes_like_serde_json() {
        let alphabet: Vec<char> = ('\0'..' ')
            .chain([
                '"', '\\', '\u{7f}', 'a', 'Z', ' ', '#', ']', 'é', '日', '🙂',
            ])
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let text: String = (0..len)
                .map(|k| {
                    let r = seed.rotate_left(k as u32 * 5) as usize;
                    // Mostly plain text, as in real lines.
                    if r.is_multiple_of(4) {
                        alphabet[r / 4 % alphabet.len()]
                    } else {
                        'x'
                    }
                })
                .collect();
            let mut ours = String::from("\"");
            write_escaped(&mut ours, &text).unwrap();
            ours.push('"');
            assert_eq!(ours, serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn integers_in_full() {
        for n in [0, 7, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            let mut s = String::new();
            write_u64(&mut s, n).unwrap();
            assert_eq!(s, n.to_string());
        }
    }
}
