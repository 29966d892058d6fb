//! Stream-level tests over a scripted in-memory connection, driven by hand so every
//! partial read, partial write and `Pending` is deterministic.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, apply_mask};
use super::*;

/// An in-memory connection: reads hand out `input` at most `read_max` bytes at a time
/// (then `Pending`, or EOF once `eof`); writes take at most `write_max` bytes, and none
/// at all while `write_open` is false. It exists for the cut points loopback TCP will not
/// produce on demand (one-byte reads, partial and blocked writes); real peers are in
/// tests/ws_interop.rs (tungstenite) and the proxy's end-to-end and abuse suites.
#[derive(Debug, Default)]
struct Scripted {
    input: Vec<u8>,
    pos: usize,
    read_max: usize,
    eof: bool,
    output: Vec<u8>,
    write_max: usize,
    write_open: bool,
    /// Bytes writes may still take before they block.
    write_budget: usize,
    vectored: bool,
    shut_down: bool,
    largest_read: usize,
}

impl Scripted {
    fn new(input: Vec<u8>) -> Self {
        Self {
            input,
            read_max: usize::MAX,
            write_max: usize::MAX,
            write_open: true,
            write_budget: usize::MAX,
            ..Self::default()
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.input.len() - self.pos;
        if left == 0 {
            return if self.eof {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        self.largest_read = self.largest_read.max(buf.remaining());
        let n = left.min(self.read_max).min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.input[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.write_open || self.write_budget == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(self.write_max).min(self.write_budget);
        self.write_budget -= n;
        self.output.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.write_open || self.write_budget == 0 {
            return Poll::Pending;
        }
        let mut budget = self.write_max.min(self.write_budget);
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(budget);
            self.output.extend_from_slice(&b[..take]);
            budget -= take;
            n += take;
        }
        self.write_budget -= n;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut_down = true;
        Poll::Ready(Ok(()))
    }
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Builds one frame as a peer would send it.
fn frame(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    let mut out = head[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// Independent of the codec under test: splits a well-formed byte string into frames.
fn reference_frames(mut wire: &[u8]) -> Vec<(u8, bool, Vec<u8>)> {
    let mut frames = Vec::new();
    while wire.len() >= 2 {
        let (fin, op, masked) = (wire[0] & 0x80 != 0, wire[0] & 0x0F, wire[1] & 0x80 != 0);
        let (len, mut at) = match wire[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        let key = masked.then(|| {
            at += 4;
            [wire[at - 4], wire[at - 3], wire[at - 2], wire[at - 1]]
        });
        let mut payload = wire[at..at + len].to_vec();
        if let Some(k) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        frames.push((op, fin, payload));
        wire = &wire[at + len..];
    }
    assert!(wire.is_empty(), "trailing partial frame");
    frames
}

/// Reads until `Pending` or EOF with buffers of `chunk` bytes.
fn drain_reads(ws: &mut WsByteStream<Scripted>, chunk: usize) -> (Vec<u8>, Option<io::Result<()>>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *ws).poll_read(&mut cx(), &mut rb) {
            Poll::Pending => return (got, None),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return (got, Some(Ok(()))),
            Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => return (got, Some(Err(e))),
        }
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn accept_key_matches_rfc_6455_example() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[tokio::test]
async fn bytes_roundtrip_in_order_both_ways_and_close_is_eof() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (server, client) = tokio::join!(server_stream(a), client_stream(b));
    let up = pattern(200_000);
    let down: Vec<u8> = up.iter().rev().copied().collect();
    let (mut sr, mut sw) = tokio::io::split(server);
    let (mut cr, mut cw) = tokio::io::split(client);
    let client_writer = async {
        for chunk in up.chunks(7_001) {
            cw.write_all(chunk).await.unwrap();
        }
        cw.flush().await.unwrap();
    };
    let server_writer = async {
        for chunk in down.chunks(3_333) {
            sw.write_all(chunk).await.unwrap();
        }
        sw.flush().await.unwrap();
    };
    let (mut got_up, mut got_down) = (vec![0; up.len()], vec![0; down.len()]);
    let ((), (), up_read, down_read) = tokio::join!(
        client_writer,
        server_writer,
        sr.read_exact(&mut got_up),
        cr.read_exact(&mut got_down),
    );
    up_read.unwrap();
    down_read.unwrap();
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);
    // The server closes: the client sees EOF and answers; the server sees that as EOF.
    sw.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(cr.read_to_end(&mut rest).await.unwrap(), 0);
    cw.shutdown().await.unwrap();
    assert_eq!(sr.read_to_end(&mut rest).await.unwrap(), 0);
    assert!(cw.write_all(b"late").await.is_err(), "no data after close");
}

#[test]
fn a_frame_arriving_one_byte_at_a_time_is_delivered_without_a_message_buffer() {
    let payload = pattern(50_000);
    let mut wire = frame(true, OpCode::Binary, Some([9, 8, 7, 6]), &payload);
    wire.extend(frame(true, OpCode::Binary, Some([1, 2, 3, 4]), b"tail"));
    let mut conn = Scripted::new(wire);
    conn.read_max = 1;
    conn.eof = true;
    let mut ws = WsByteStream::new(conn, Role::Server);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut most_buffered = 0;
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut ws).poll_read(&mut cx(), &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break,
            Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
            other => panic!("{other:?}"),
        }
        most_buffered = most_buffered.max(ws.buffered_capacity());
    }
    let mut want = payload;
    want.extend_from_slice(b"tail");
    assert_eq!(got, want);
    // The payload went to the caller's buffer, never through one sized by the frame.
    assert!(most_buffered <= READ_CHUNK_FOR_TESTS, "{most_buffered}");
}

/// `stream::READ_CHUNK`, restated: the read buffer never needs more than this.
const READ_CHUNK_FOR_TESTS: usize = 4 * 1024;

#[test]
fn large_payload_is_read_straight_into_the_callers_buffer() {
    let payload = pattern(40_000);
    let mut conn = Scripted::new(frame(true, OpCode::Binary, None, &payload));
    conn.read_max = 10;
    let mut ws = WsByteStream::new(conn, Role::Client);
    // The header needs the read buffer; the payload then goes straight to the caller,
    // which shows as inner reads the size of the caller's buffer.
    let (got, end) = drain_reads(&mut ws, 30_000);
    assert!(end.is_none());
    assert_eq!(got, payload);
    assert!(
        ws.get_ref().largest_read >= 30_000 - 10,
        "{}",
        ws.get_ref().largest_read
    );
    // Idle (the connection said Pending with nothing buffered): no read buffer held.
    assert_eq!(ws.buffered_capacity(), 0);
}

#[test]
fn a_64_mib_frame_header_is_refused_before_anything_is_allocated() {
    let mut wire = vec![0x82, 0x80 | 127];
    wire.extend_from_slice(&(64u64 << 20).to_be_bytes());
    wire.extend_from_slice(&[1, 2, 3, 4]);
    let mut conn = Scripted::new(wire);
    conn.eof = true;
    let mut ws = WsByteStream::new(conn, Role::Server);
    let (got, end) = drain_reads(&mut ws, 1 << 16);
    assert!(got.is_empty());
    let err = end.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert!(ws.buffered_capacity() <= READ_CHUNK_FOR_TESTS);
    // The refusal sticks.
    let (_, again) = drain_reads(&mut ws, 16);
    assert!(again.unwrap().is_err());
}

#[test]
fn text_message_is_an_invalid_data_error() {
    let mut ws = WsByteStream::new(
        Scripted::new(frame(true, OpCode::Text, Some([1, 1, 1, 1]), b"hello")),
        Role::Server,
    );
    let err = drain_reads(&mut ws, 64).1.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "text websocket message on a binary tunnel");
}

#[test]
fn data_before_a_bad_frame_is_delivered_then_the_error() {
    let mut wire = frame(true, OpCode::Binary, None, b"good");
    wire.extend(frame(true, OpCode::Binary, Some([1, 2, 3, 4]), b"bad"));
    let mut ws = WsByteStream::new(Scripted::new(wire), Role::Client);
    let (got, end) = drain_reads(&mut ws, 64);
    assert_eq!(got, b"good");
    assert!(
        end.unwrap()
            .unwrap_err()
            .to_string()
            .contains("servers must not mask")
    );
}

#[test]
fn ping_is_answered_with_pong_and_fragments_are_joined() {
    let key = Some([5, 6, 7, 8]);
    let mut wire = frame(false, OpCode::Binary, key, b"frag");
    wire.extend(frame(true, OpCode::Ping, key, b"are you there"));
    wire.extend(frame(false, OpCode::Continuation, key, b"men"));
    wire.extend(frame(true, OpCode::Pong, key, b"unsolicited"));
    wire.extend(frame(true, OpCode::Continuation, key, b"ted"));
    let mut ws = WsByteStream::new(Scripted::new(wire), Role::Server);
    let (got, end) = drain_reads(&mut ws, 3);
    assert!(end.is_none());
    assert_eq!(got, b"fragmented");
    let out = reference_frames(&ws.get_ref().output);
    assert_eq!(out, vec![(0xA, true, b"are you there".to_vec())]);
}

#[test]
fn a_pong_waits_for_a_half_sent_frame_and_never_lands_inside_it() {
    let mut conn = Scripted::new(Vec::new());
    conn.write_budget = 3;
    let mut ws = WsByteStream::new(conn, Role::Server);
    let data = pattern(1000);
    let Poll::Ready(Ok(n)) = Pin::new(&mut ws).poll_write(&mut cx(), &data) else {
        panic!("write not accepted");
    };
    assert_eq!(n, 1000);
    // Only part of the frame went out; the writer is blocked when a ping arrives.
    assert!(Pin::new(&mut ws).poll_flush(&mut cx()).is_pending());
    assert_eq!(ws.get_ref().output.len(), 3);
    ws.get_mut().input = frame(true, OpCode::Ping, Some([1, 2, 3, 4]), b"p");
    ws.get_mut().write_budget = usize::MAX;
    let _ = drain_reads(&mut ws, 64);
    assert!(Pin::new(&mut ws).poll_flush(&mut cx()).is_ready());
    let out = reference_frames(&ws.get_ref().output);
    assert_eq!(out, vec![(0x2, true, data), (0xA, true, b"p".to_vec())]);
}

#[test]
fn close_is_eof_answered_once_and_ends_writing() {
    let mut wire = frame(true, OpCode::Binary, Some([1, 2, 3, 4]), b"last");
    wire.extend(frame(
        true,
        OpCode::Close,
        Some([1, 2, 3, 4]),
        &[0x03, 0xE9, b'b', b'y'],
    ));
    wire.extend(frame(
        true,
        OpCode::Binary,
        Some([1, 2, 3, 4]),
        b"after close",
    ));
    let mut ws = WsByteStream::new(Scripted::new(wire), Role::Server);
    let (got, end) = drain_reads(&mut ws, 64);
    assert_eq!(got, b"last");
    assert!(end.unwrap().is_ok(), "close is EOF");
    assert!(drain_reads(&mut ws, 64).1.unwrap().is_ok(), "EOF stays EOF");
    assert!(matches!(
        Pin::new(&mut ws).poll_write(&mut cx(), b"x"),
        Poll::Ready(Err(_))
    ));
    assert!(Pin::new(&mut ws).poll_shutdown(&mut cx()).is_ready());
    let out = reference_frames(&ws.get_ref().output);
    assert_eq!(
        out,
        vec![(0x8, true, vec![0x03, 0xE9])],
        "status echoed, once"
    );
    assert!(ws.get_ref().shut_down);
}

#[test]
fn shutdown_sends_a_masked_close_then_shuts_the_connection() {
    let mut ws = WsByteStream::new(Scripted::new(Vec::new()), Role::Client);
    assert!(Pin::new(&mut ws).poll_write(&mut cx(), b"bye").is_ready());
    assert!(matches!(
        Pin::new(&mut ws).poll_shutdown(&mut cx()),
        Poll::Ready(Ok(_))
    ));
    let wire = ws.get_ref().output.clone();
    assert!(wire[1] & 0x80 != 0, "client frames are masked");
    let out = reference_frames(&wire);
    assert_eq!(
        out,
        vec![(0x2, true, b"bye".to_vec()), (0x8, true, vec![0x03, 0xE8])]
    );
    assert!(ws.get_ref().shut_down);
}

#[test]
fn client_masks_each_frame_with_a_fresh_key() {
    let mut ws = WsByteStream::new(Scripted::new(Vec::new()), Role::Client);
    for _ in 0..40 {
        assert!(
            Pin::new(&mut ws)
                .poll_write(&mut cx(), &[0u8; 8])
                .is_ready()
        );
    }
    let wire = &ws.get_ref().output;
    // 40 frames of 2 + 4 + 8 bytes; with zero payload the masked bytes show the key.
    let keys: std::collections::HashSet<&[u8]> = wire.chunks(14).map(|f| &f[2..6]).collect();
    assert!(keys.len() >= 39, "masking keys repeat: {}", keys.len());
    assert!(reference_frames(wire).iter().all(|f| f.2 == [0u8; 8]));
}

fn write_all_polled(ws: &mut WsByteStream<Scripted>, data: &[u8]) -> Vec<usize> {
    let mut accepted = Vec::new();
    let mut at = 0;
    while at < data.len() {
        match Pin::new(&mut *ws).poll_write(&mut cx(), &data[at..]) {
            Poll::Ready(Ok(n)) => {
                assert!(n > 0);
                accepted.push(n);
                at += n;
            }
            other => panic!("{other:?}"),
        }
    }
    while Pin::new(&mut *ws).poll_flush(&mut cx()).is_pending() {}
    accepted
}

#[test]
fn writes_make_progress_one_byte_at_a_time_in_every_mode() {
    let data = pattern(150_000);
    for (role, vectored) in [
        (Role::Server, true),
        (Role::Server, false),
        (Role::Client, false),
    ] {
        let mut conn = Scripted::new(Vec::new());
        conn.write_max = 1;
        conn.vectored = vectored;
        let mut ws = WsByteStream::new(conn, role);
        let accepted = write_all_polled(&mut ws, &data);
        // Whole frames of at most 64 KiB, each accepted at once.
        assert_eq!(
            accepted,
            vec![65_536, 65_536, 150_000 - 131_072],
            "{role:?}"
        );
        let frames = reference_frames(&ws.get_ref().output);
        assert!(frames.iter().all(|f| f.0 == 0x2 && f.1));
        let joined: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
        assert_eq!(joined, data, "{role:?} vectored={vectored}");
        // Drained: the big frame buffer was freed.
        assert!(ws.buffered_capacity() <= 4096, "{}", ws.buffered_capacity());
    }
}

#[test]
fn a_write_is_not_accepted_until_it_can_be_committed() {
    let mut conn = Scripted::new(Vec::new());
    conn.vectored = true;
    conn.write_open = false;
    let mut ws = WsByteStream::new(conn, Role::Server);
    // The server's vectored write got nothing out: nothing is accepted or buffered.
    assert!(Pin::new(&mut ws).poll_write(&mut cx(), b"abc").is_pending());
    assert_eq!(ws.buffered_capacity(), 0);
    ws.get_mut().write_open = true;
    assert!(matches!(
        Pin::new(&mut ws).poll_write(&mut cx(), b"xyz"),
        Poll::Ready(Ok(_))
    ));
    assert_eq!(
        reference_frames(&ws.get_ref().output),
        vec![(0x2, true, b"xyz".to_vec())]
    );
}

#[test]
fn vectored_writes_become_one_frame() {
    let mut conn = Scripted::new(Vec::new());
    conn.vectored = true;
    let mut ws = WsByteStream::new(conn, Role::Server);
    let bufs = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cde")];
    let n = Pin::new(&mut ws).poll_write_vectored(&mut cx(), &bufs);
    assert!(matches!(n, Poll::Ready(Ok(5))));
    assert_eq!(
        reference_frames(&ws.get_ref().output),
        vec![(0x2, true, b"abcde".to_vec())]
    );
}

#[test]
fn bytes_read_with_the_handshake_start_the_stream() {
    let first = frame(true, OpCode::Binary, None, b"early");
    let mut ws = WsByteStream::with_buffered(
        Scripted::new(frame(true, OpCode::Binary, None, b" bird")),
        Role::Client,
        &first,
    );
    assert_eq!(drain_reads(&mut ws, 64).0, b"early bird");
}

#[test]
fn eof_inside_a_frame_is_an_error_and_between_frames_is_eof() {
    let mut wire = frame(true, OpCode::Binary, None, b"whole");
    let mut clean = Scripted::new(wire.clone());
    clean.eof = true;
    let mut ws = WsByteStream::new(clean, Role::Client);
    let (got, end) = drain_reads(&mut ws, 64);
    assert_eq!(got, b"whole");
    assert!(end.unwrap().is_ok());

    wire.extend(&frame(true, OpCode::Binary, None, b"cut short")[..5]);
    let mut cut = Scripted::new(wire);
    cut.eof = true;
    let mut ws = WsByteStream::new(cut, Role::Client);
    let (got, end) = drain_reads(&mut ws, 64);
    // Payload is streamed: what arrived of the cut frame was delivered before the error.
    assert_eq!(got, b"wholecut");
    assert_eq!(
        end.unwrap().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

/// A peer's frame sequence for the property test.
#[derive(Debug, Clone)]
enum Peer {
    /// One message split into these fragments.
    Message(Vec<Vec<u8>>),
    Ping(Vec<u8>),
}

fn peer_frames() -> impl Strategy<Value = Vec<Peer>> {
    let fragment = proptest::collection::vec(any::<u8>(), 0..3000);
    let message = proptest::collection::vec(fragment, 1..4).prop_map(Peer::Message);
    let ping = proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Peer::Ping);
    proptest::collection::vec(prop_oneof![4 => message, 1 => ping], 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_frame_sequences_decode_to_their_payloads(
        peer in peer_frames(),
        keys in proptest::collection::vec(any::<[u8; 4]>(), 64),
        read_max in 1usize..5000,
        chunk in 1usize..9000,
        server in any::<bool>(),
    ) {
        let mut keys = keys.into_iter().cycle();
        let mut key = || if server { keys.next() } else { None };
        let (mut wire, mut want, mut pings) = (Vec::new(), Vec::new(), Vec::new());
        for item in &peer {
            match item {
                Peer::Ping(p) => {
                    wire.extend(frame(true, OpCode::Ping, key(), p));
                    pings.push(p.clone());
                }
                Peer::Message(parts) => {
                    for (i, part) in parts.iter().enumerate() {
                        let op = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
                        wire.extend(frame(i + 1 == parts.len(), op, key(), part));
                        want.extend_from_slice(part);
                        // A ping between fragments, sometimes.
                        if i + 1 < parts.len() && part.len() % 3 == 0 {
                            let p = part.iter().take(5).copied().collect::<Vec<u8>>();
                            wire.extend(frame(true, OpCode::Ping, key(), &p));
                            pings.push(p);
                        }
                    }
                }
            }
        }
        let mut conn = Scripted::new(wire);
        conn.read_max = read_max;
        conn.eof = true;
        let role = if server { Role::Server } else { Role::Client };
        let mut ws = WsByteStream::new(conn, role);
        let (got, end) = drain_reads(&mut ws, chunk);
        prop_assert!(matches!(end, Some(Ok(()))), "{end:?}");
        prop_assert_eq!(got, want);
        // The connection always takes writes, so every ping got its own pong, in order.
        let pongs: Vec<Vec<u8>> = reference_frames(&ws.get_ref().output)
            .into_iter()
            .map(|(op, _, p)| { assert_eq!(op, 0xA); p })
            .collect();
        prop_assert_eq!(pongs, pings);
    }
}
