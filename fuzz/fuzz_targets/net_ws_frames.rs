//! Fuzzes the WebSocket byte stream's decoder, which reads every byte a client or proxy
//! receives: arbitrary bytes arrive, in arbitrary read sizes, at a server-role and a
//! client-role `WsByteStream`. No panic; the bytes delivered are exactly the data
//! payloads an independent reference walk of the frames finds (up to the first rule
//! broken, a close, or the end); the outcome (EOF or error) agrees with it; and all we
//! write back are pongs and one close, masked exactly when we are the client.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use mcp_tunnel_net::ws::{MAX_MESSAGE_BYTES, Role, WsByteStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Inbound bytes handed out `step` at a time, then EOF; writes always succeed.
struct Memory<'a> {
    input: &'a [u8],
    step: usize,
    output: Vec<u8>,
}

impl AsyncRead for Memory<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(self.step).min(buf.remaining());
        let (now, later) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Memory<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, PartialEq)]
enum End {
    /// A close frame, or the input ended between messages.
    Eof,
    /// A rule was broken, or the input ended inside a frame or message.
    Error,
}

struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
    /// The whole payload was there.
    complete: bool,
}

/// One frame from the front of `wire`, written without the codec's types. `Err(())`:
/// the header breaks a rule; `Ok(None)`: the header is cut short.
fn reference_frame(wire: &[u8], server: bool) -> Result<Option<(Frame, usize)>, ()> {
    let [b0, b1, ..] = *wire else {
        // One byte can already break a rule.
        if let Some(&b0) = wire.first() {
            first_byte_rules(b0)?;
        }
        return Ok(None);
    };
    first_byte_rules(b0)?;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    if masked != server {
        return Err(());
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if wire.len() >= 4 => (u64::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
        127 if wire.len() >= 10 => (u64::from_be_bytes(wire[2..10].try_into().unwrap()), 10),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len >> 63 != 0 || (opcode >= 8 && len > 125) || len > MAX_MESSAGE_BYTES as u64 {
        return Err(());
    }
    let mut key = [0u8; 4];
    if masked {
        let Some(k) = wire.get(at..at + 4) else {
            return Ok(None);
        };
        key.copy_from_slice(k);
        at += 4;
    }
    let len = len as usize;
    let available = (wire.len() - at).min(len);
    let payload = wire[at..at + available]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        opcode,
        payload,
        complete: available == len,
    };
    Ok(Some((frame, at + available)))
}

fn first_byte_rules(b0: u8) -> Result<(), ()> {
    let opcode = b0 & 0x0F;
    let rsv = b0 & 0x70 != 0;
    let known = matches!(opcode, 0 | 2 | 8 | 9 | 10); // text (1) is refused here too
    let fragmented_control = opcode >= 8 && b0 & 0x80 == 0;
    if rsv || !known || fragmented_control {
        return Err(());
    }
    Ok(())
}

/// What the stream must deliver and how it must end.
fn reference(mut wire: &[u8], server: bool) -> (Vec<u8>, End) {
    let mut data = Vec::new();
    let mut in_message = false;
    loop {
        if wire.is_empty() {
            let end = if in_message { End::Error } else { End::Eof };
            return (data, end);
        }
        let Ok(parsed) = reference_frame(wire, server) else {
            return (data, End::Error);
        };
        let Some((frame, used)) = parsed else {
            return (data, End::Error);
        };
        match frame.opcode {
            0 if !in_message => return (data, End::Error),
            2 if in_message => return (data, End::Error),
            0 | 2 => {
                data.extend_from_slice(&frame.payload);
                in_message = !frame.fin;
            }
            8 if frame.complete => return (data, End::Eof),
            _ => {}
        }
        if !frame.complete {
            return (data, End::Error);
        }
        wire = &wire[used..];
    }
}

fn run(input: &[u8], step: usize, read_size: usize, role: Role) -> (Vec<u8>, End, Vec<u8>) {
    let memory = Memory {
        input,
        step,
        output: Vec::new(),
    };
    let mut ws = WsByteStream::new(memory, role);
    let mut cx = Context::from_waker(Waker::noop());
    let mut got = Vec::new();
    let mut buf = vec![0u8; read_size];
    let end = loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut ws).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break End::Eof,
            Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
            Poll::Ready(Err(_)) => break End::Error,
            Poll::Pending => panic!("in-memory input never blocks"),
        }
        assert!(
            ws.buffered_capacity() <= 64 * 1024,
            "read buffer grew with the input"
        );
    };
    let _ = Pin::new(&mut ws).poll_shutdown(&mut cx);
    let output = std::mem::take(&mut ws.get_mut().output);
    (got, end, output)
}

/// What we wrote back: pongs and then one close, each a whole valid frame.
fn check_output(mut out: &[u8], masked: bool) {
    let mut closes = 0;
    while !out.is_empty() {
        assert!(out.len() >= 2);
        assert_eq!(out[1] & 0x80 != 0, masked, "masking follows the role");
        let len = usize::from(out[1] & 0x7F);
        assert!(len <= 125, "control frame of {len} bytes");
        let at = 2 + if masked { 4 } else { 0 };
        assert!(
            matches!(out[0], 0x8A | 0x88),
            "only pongs and a close: {:#x}",
            out[0]
        );
        assert_eq!(closes, 0, "nothing after the close");
        closes += usize::from(out[0] == 0x88);
        out = &out[at + len..];
    }
    assert_eq!(closes, 1, "shutdown sends one close");
}

fuzz_target!(|data: &[u8]| {
    let [step, size, input @ ..] = data else {
        return;
    };
    let step = usize::from(*step).max(1);
    let read_size = usize::from(*size) * 64 + 1;
    for (role, server) in [(Role::Server, true), (Role::Client, false)] {
        let (want, want_end) = reference(input, server);
        let (got, end, output) = run(input, step, read_size, role);
        assert!(got.len() <= input.len());
        assert_eq!(got, want, "delivered bytes, {role:?}");
        assert_eq!(end, want_end, "outcome, {role:?}");
        check_output(&output, !server);
    }
});
