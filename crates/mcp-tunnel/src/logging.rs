//! Structured logs: JSON lines on stdout by default (one object per event, fields at the
//! top level, `message` holding the event name), or human-readable text.
//!
//! Lines go to stdout through [`Batcher`]: the thread that logs copies its line into a
//! shared buffer and goes on; one writer thread drains the buffer with a single write
//! per batch. Under load a busy proxy logs two lines per request, and a `write(2)` per
//! line on the request path cost it over a tenth of its CPU. The buffer is bounded: when
//! stdout cannot keep up, loggers wait, as they would on a blocking write. [`flush`]
//! (called before the process exits) waits until every line is written.
//!
//! JSON lines are formatted by [`JsonLines`] (see `json.rs` for why not by
//! tracing-subscriber's own JSON formatter, whose output it reproduces).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;

mod json;
#[cfg(test)]
mod json_golden;

pub use json::JsonLines;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Above this many pending bytes, loggers wait for the writer.
const MAX_PENDING: usize = 4 << 20;

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer thread is waiting for lines (so a new line must wake it).
    idle: bool,
    /// Bytes handed to the sink so far, and bytes accepted so far: equal when drained.
    written: u64,
    accepted: u64,
}

/// Lines from any thread, written by one thread in batches.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Batcher {
    /// Starts the writer thread over `sink`.
    pub fn start(mut sink: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut batch = Vec::new();
                loop {
                    {
                        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while st.pending.is_empty() {
                            st.idle = true;
                            st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        st.idle = false;
                        std::mem::swap(&mut batch, &mut st.pending);
                        // Loggers waiting on a full buffer may go on.
                        cv.notify_all();
                    }
                    // A closed stdout loses the lines, as a direct write would.
                    let _ = sink.write_all(&batch).and_then(|()| sink.flush());
                    let n = batch.len() as u64;
                    batch.clear();
                    if batch.capacity() > MAX_PENDING {
                        batch.shrink_to(64 << 10);
                    }
                    let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
                    st.written += n;
                    cv.notify_all();
                }
            })
            .expect("start the log writer thread");
        Self { shared }
    }

    fn push(&self, bytes: &[u8]) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        while st.pending.len() >= MAX_PENDING {
            st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.pending.extend_from_slice(bytes);
        st.accepted += bytes.len() as u64;
        if st.idle {
            st.idle = false;
            cv.notify_all();
        }
    }

    /// Waits until every line accepted so far has been written.
    pub fn flush(&self) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
        let target = st.accepted;
        while st.written < target {
            st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What the subscriber writes one event to.
pub struct Line(Batcher);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batcher {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(self.clone())
    }
}

static STDOUT: OnceLock<Batcher> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Our crates at `level`; dependencies only at warn, so a debug log stays readable.
        EnvFilter::new(format!("warn,mcp_tunnel={level},mcp_tunnel_proxy={level},mcp_tunnel_connector={level},mcp_tunnel_edge={level},mcp_tunnel_client={level},mcp_tunnel_control={level}"))
    });
    let out = STDOUT
        .get_or_init(|| Batcher::start(Box::new(std::io::stdout())))
        .clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(out);
    let _ = match format {
        Format::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new())
            .try_init(),
        Format::Text => builder.with_ansi(false).try_init(),
    };
}

/// Writes out every line logged so far (before the process exits).
pub fn flush() {
    if let Some(b) = STDOUT.get() {
        b.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what it was given, write by write.
    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Record {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_order_and_batched() {
        let rec = Record::default();
        let b = Batcher::start(Box::new(rec.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let mut w = b.make_writer();
                        w.write_all(format!("{{\"t\":{t},\"i\":{i}}}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        b.flush();
        let writes = rec.0.lock().unwrap().clone();
        let all: Vec<u8> = writes.concat();
        let text = String::from_utf8(all).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = v["t"].as_u64().unwrap() as usize;
            assert_eq!(v["i"].as_u64().unwrap(), next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
        assert!(
            writes.len() < 20_000,
            "one write per line: {}",
            writes.len()
        );
    }

    #[test]
    fn flush_waits_for_a_slow_sink() {
        struct Slow(Record);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(20));
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let rec = Record::default();
        let b = Batcher::start(Box::new(Slow(rec.clone())));
        for i in 0..50 {
            b.make_writer()
                .write_all(format!("{i}\n").as_bytes())
                .unwrap();
        }
        b.flush();
        let text = String::from_utf8(rec.0.lock().unwrap().concat()).unwrap();
        assert_eq!(text.lines().count(), 50);
    }
}
