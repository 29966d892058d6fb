//! [`JsonLines`] against tracing-subscriber's JSON formatter, event by event: the lines
//! must be identical apart from the timestamp's value.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing::field::Empty;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;

use super::json::{JsonLines, legacy};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct CaptureLine(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = CaptureLine;
    fn make_writer(&'a self) -> CaptureLine {
        CaptureLine(self.0.clone())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The lines `emit` logs through the old formatter and through ours.
fn both(emit: impl Fn()) -> (String, String) {
    let old = Capture::default();
    let sub = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer(old.clone())
        .fmt_fields(JsonFields::new())
        .event_format(legacy())
        .finish();
    tracing::subscriber::with_default(sub, &emit);
    let new = Capture::default();
    let sub = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer(new.clone())
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines::new())
        .finish();
    tracing::subscriber::with_default(sub, &emit);
    (old.text(), new.text())
}

const STAMP_AT: usize = "{\"timestamp\":\"".len();
const STAMP_LEN: usize = "2025-01-31T09:05:01.123456Z".len();

/// Checks the timestamp's shape and returns the line with the timestamp blanked out.
fn blank_stamp(line: &str) -> String {
    assert!(line.starts_with("{\"timestamp\":\""), "{line}");
    let stamp = &line.as_bytes()[STAMP_AT..STAMP_AT + STAMP_LEN];
    for (i, &b) in stamp.iter().enumerate() {
        let want: &[u8] = match i {
            4 | 7 => b"-",
            10 => b"T",
            13 | 16 => b":",
            19 => b".",
            26 => b"Z",
            _ => b"0123456789",
        };
        assert!(want.contains(&b), "timestamp byte {i} in {line}");
    }
    assert_eq!(line.as_bytes()[STAMP_AT + STAMP_LEN], b'"', "{line}");
    format!(
        "{}<stamp>{}",
        &line[..STAMP_AT],
        &line[STAMP_AT + STAMP_LEN..]
    )
}

fn assert_same(old: &str, new: &str) {
    let (old, new): (Vec<_>, Vec<_>) = (old.lines().collect(), new.lines().collect());
    assert_eq!(old.len(), new.len(), "line counts differ");
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(blank_stamp(o), blank_stamp(n));
        serde_json::from_str::<serde_json::Value>(n).expect("our line is JSON");
    }
}

/// Writes its text in pieces of at most 3 bytes, as `Display` impls built from several
/// `write!` calls do, so escapes fall at piece boundaries too.
struct Chunked(&'static str);

impl fmt::Display for Chunked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while !rest.is_empty() {
            let mut cut = rest.len().min(3);
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            f.write_str(&rest[..cut])?;
            rest = &rest[cut..];
        }
        Ok(())
    }
}

struct Failing;

impl fmt::Display for Failing {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Err(fmt::Error)
    }
}

#[derive(Debug)]
#[expect(dead_code, reason = "read through Debug only")]
struct Nested {
    name: &'static str,
    tags: Vec<&'static str>,
    port: Option<u16>,
}

#[derive(Debug)]
struct Refused(&'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: \"{}\"\n\tby rule", self.0)
    }
}

impl std::error::Error for Refused {}

fn every_control_char() -> String {
    (0u8..0x20).chain([0x7f]).map(char::from).collect()
}

#[test]
fn same_lines_as_tracing_subscriber_json() {
    let long: String = "abc\"déf\\\n🙂".repeat(20_000);
    let controls = every_control_char();
    let (old, new) = both(|| {
        // The proxy's per-request line.
        tracing::info!(
            route = %"api",
            method = %http::Method::POST,
            status = 200u16,
            duration = %"1.234ms",
            bytes = 1234u64,
            outcome = "ok",
            "request completed"
        );
        tracing::trace!("trace level");
        tracing::debug!("debug level");
        tracing::info!("info level");
        tracing::warn!("warn level");
        tracing::error!("error level");
        tracing::info!("");
        tracing::info!(n = 1, "message after a field");
        tracing::info!(only_field = true);
        tracing::info!(message = "explicit message field", other = 2);
        tracing::info!(message = %"displayed message field");
        tracing::info!(a = 1, a = "twice", "duplicated names");
        tracing::info!(
            i_min = i64::MIN,
            i_neg = -42i64,
            i_zero = 0i64,
            i_max = i64::MAX,
            u_zero = 0u64,
            u_max = u64::MAX,
            u32_v = 4_000_000_000u32,
            i8_v = -8i8,
            "integers"
        );
        tracing::info!(
            big_i = i128::MIN,
            big_u = u128::MAX,
            "128-bit integers go through Debug"
        );
        tracing::info!(
            f1 = 1.0f64,
            f2 = 0.1f64,
            f3 = -0.0f64,
            f4 = 1e20f64,
            f5 = 1.5e-7f64,
            f6 = f64::MAX,
            f7 = f64::MIN_POSITIVE,
            f8 = f64::NAN,
            f9 = f64::INFINITY,
            f10 = f64::NEG_INFINITY,
            f11 = 0.3f32,
            "floats"
        );
        tracing::info!(t = true, f = false, "bools");
        tracing::info!(
            quote = "say \"hi\"",
            backslash = "C:\\path\\",
            controls = controls.as_str(),
            del = "\u{7f}",
            accents = "héllo wörld",
            cjk = "日本語",
            emoji = "🙂👍🏽",
            separators = "\u{2028}\u{2029}",
            "strings"
        );
        tracing::info!(
            quote = %"say \"hi\"",
            controls = %controls,
            chunked = %Chunked("a\"b\\c\nd\u{1}é🙂f\tg"),
            emoji = %"🙂",
            "display values"
        );
        tracing::info!(
            s = ?"quoted by Debug",
            nested = ?Nested { name: "x\"y", tags: vec!["a", "b\n"], port: Some(443) },
            none = ?None::<u8>,
            unit = ?(),
            "debug values"
        );
        let refused = Refused("10.0.0.1");
        tracing::warn!(
            error = &refused as &(dyn std::error::Error + 'static),
            "error values"
        );
        let io = std::io::Error::other("disk \"full\"");
        tracing::error!(error = %io, dbg = ?io, "io error");
        tracing::info!(b = &b"bytes\x00\xff"[..], "bytes");
        tracing::info!(set = 1, unset = Empty, "empty fields are left out");
        tracing::info!(r#type = "raw", dotted.name = 3, "odd names");
        tracing::info!(target: "custom::target", "custom target");
        tracing::info!(target: "we\"ird\\target", "target needing escapes");
        tracing::info!(long = long.as_str(), long_display = %long, "very long");
        tracing::info!("{long}");
        tracing::info!(
            message = "bridged-looking",
            log.target = "dep",
            "has log.target"
        );
    });
    assert_eq!(old.lines().count(), 29, "one line per event");
    assert!(old.contains("request completed"));
    assert_same(&old, &new);
}

/// Here the old formatter panics (serde_json's `collect_str` expects an I/O error behind
/// every `fmt::Error`); ours lets tracing-subscriber report the event instead.
#[test]
fn a_failing_display_loses_only_its_event() {
    let new = Capture::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(new.clone())
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines::new())
        .finish();
    tracing::subscriber::with_default(sub, || {
        tracing::info!(x = %Failing, "unformattable");
        tracing::info!(after = "a failure", "next line is fine");
    });
    let text = new.text();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("Unable to format"), "{text}");
    assert!(!lines[0].contains("timestamp"), "no partial line: {text}");
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["message"], "next line is fine");
    assert_eq!(v["after"], "a failure");
}

#[test]
fn timestamps_agree_to_the_second() {
    for _ in 0..3 {
        let (old, new) = both(|| tracing::info!("now"));
        let (o, n) = (&old[STAMP_AT..STAMP_AT + 19], &new[STAMP_AT..STAMP_AT + 19]);
        if o == n {
            return;
        }
        // A second boundary fell between the two lines.
    }
    panic!("timestamps disagree");
}

/// `cargo test --release -p mcp-tunnel --bin mcp-tunnel -- --ignored --nocapture
/// format_cost`: ns per `request completed` event through each formatter, written to a
/// sink that discards it.
#[test]
#[ignore = "benchmark"]
fn format_cost() {
    const EVENTS: u32 = 1_000_000;
    fn run(label: &str, sub: impl tracing::Subscriber + Send + Sync + 'static) -> f64 {
        let route = String::from("weather-api");
        let method = http::Method::POST;
        let duration = "1.234ms";
        let emit = || {
            for i in 0..EVENTS {
                tracing::info!(
                    route = %route,
                    method = %method,
                    status = 200u16,
                    duration = %duration,
                    bytes = u64::from(i),
                    outcome = "ok",
                    "request completed"
                );
            }
        };
        let start = std::time::Instant::now();
        tracing::subscriber::with_default(sub, emit);
        let ns = start.elapsed().as_nanos() as f64 / f64::from(EVENTS);
        println!("{label}: {ns:.0} ns/event");
        ns
    }
    /// The floor: dispatch, the fmt layer and the sink, but no formatting.
    struct Nothing;
    impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Nothing
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    {
        fn format_event(
            &self,
            _: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
            mut w: tracing_subscriber::fmt::format::Writer<'_>,
            _: &tracing::Event<'_>,
        ) -> fmt::Result {
            w.write_str("\n")
        }
    }
    let make = || std::io::sink;
    for _ in 0..2 {
        run(
            "no formatting (floor)",
            tracing_subscriber::fmt()
                .with_writer(make())
                .event_format(Nothing)
                .finish(),
        );
        run(
            "tracing-subscriber json",
            tracing_subscriber::fmt()
                .with_writer(make())
                .fmt_fields(JsonFields::new())
                .event_format(legacy())
                .finish(),
        );
        run(
            "JsonLines",
            tracing_subscriber::fmt()
                .with_writer(make())
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines::new())
                .finish(),
        );
    }
}
