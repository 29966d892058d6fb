//! [`WsByteStream`]: the byte stream over a WebSocket's binary frames.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{
    FrameDecoder, FrameError, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode, Role,
    apply_mask,
};

/// Reads for headers (and small payloads) go through a buffer this big, so one read from
/// the connection usually brings a whole small frame or several headers.
const READ_CHUNK: usize = 4 * 1024;
/// Payload at least this long (and room for it in the caller's buffer) is read straight
/// into the caller's buffer; shorter payload rides along in the read buffer.
const DIRECT_READ_MIN: usize = 1024;
/// Payload per written frame; a larger write is accepted in part (the caller loops).
const WRITE_FRAME_MAX: usize = 64 * 1024;
/// A write buffer larger than this is freed once drained rather than kept while idle.
const WRITE_RETAIN: usize = 4 * 1024;
/// Slices gathered into one frame by a vectored write (plus the header).
const MAX_IOV: usize = 16;
/// Close status 1000, normal closure (RFC 6455 §7.4.1).
const NORMAL_CLOSURE: [u8; 2] = 1000u16.to_be_bytes();

/// `AsyncRead + AsyncWrite` over the binary frames of a WebSocket connection `S`.
#[derive(Debug)]
pub struct WsByteStream<S> {
    io: S,
    role: Role,
    decoder: FrameDecoder,
    read: ReadState,
    /// Received bytes not yet parsed or delivered; empty and unallocated when idle.
    rbuf: BytesMut,
    /// Whole frames committed but not yet written to `io`, from `wpos` on.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Pong owed for the latest ping; written once no frame is half-sent.
    pong: Option<Control>,
    /// Close frame to send (our shutdown, or the answer to the peer's close).
    close: Option<Control>,
    /// A close frame has been committed: no frame may follow it.
    close_committed: bool,
    /// The last write-side poll returned `Pending`: a writer waits on `io`, so reads must
    /// not touch `io`'s write side (that could replace the writer's waker).
    write_blocked: bool,
    masks: MaskPool,
}

#[derive(Debug, Clone)]
enum ReadState {
    Header,
    Payload {
        remaining: u64,
        mask: Option<[u8; 4]>,
        /// Bytes of this frame's payload already delivered, for the mask phase.
        offset: usize,
    },
    /// Close frame received (or the connection ended between frames).
    Eof,
    /// The peer broke a rule; every later read repeats the error.
    Failed(FrameError),
}

/// A control frame payload (≤ 125 bytes) kept without allocating.
#[derive(Debug, Clone, Copy)]
struct Control {
    len: u8,
    data: [u8; MAX_CONTROL_PAYLOAD],
}

impl Control {
    fn new(payload: &[u8]) -> Self {
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut data = [0u8; MAX_CONTROL_PAYLOAD];
        data[..len].copy_from_slice(&payload[..len]);
        Self {
            len: len as u8,
            data,
        }
    }

    fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// Masking keys from the system CSPRNG (RFC 6455 §5.3), fetched 16 at a time.
#[derive(Debug)]
struct MaskPool {
    bytes: [u8; 64],
    used: usize,
}

impl MaskPool {
    fn new() -> Self {
        Self {
            bytes: [0; 64],
            used: 64,
        }
    }

    fn next(&mut self) -> io::Result<[u8; 4]> {
        if self.used + 4 > self.bytes.len() {
            aws_lc_rs::rand::fill(&mut self.bytes)
                .map_err(|_| io::Error::other("system random source failed"))?;
            self.used = 0;
        }
        let b = &self.bytes[self.used..self.used + 4];
        self.used += 4;
        Ok([b[0], b[1], b[2], b[3]])
    }
}

fn invalid(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
}

impl<S> WsByteStream<S> {
    /// Wraps an upgraded connection; `role` is the side this end plays.
    pub fn new(io: S, role: Role) -> Self {
        Self::with_buffered(io, role, &[])
    }

    /// Like [`WsByteStream::new`], for a connection whose first bytes were already read
    /// (they arrived with the handshake response).
    pub fn with_buffered(io: S, role: Role, buffered: &[u8]) -> Self {
        Self {
            io,
            role,
            decoder: FrameDecoder::new(role),
            read: ReadState::Header,
            rbuf: BytesMut::from(buffered),
            wbuf: Vec::new(),
            wpos: 0,
            pong: None,
            close: None,
            close_committed: false,
            write_blocked: false,
            masks: MaskPool::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Bytes of buffer memory held right now (read and write), for idle-memory checks.
    pub fn buffered_capacity(&self) -> usize {
        self.rbuf.capacity() + self.wbuf.capacity()
    }

    /// Appends a whole frame with `payload` to `wbuf`, masking it in the client role.
    fn commit_frame(&mut self, opcode: OpCode, payload: &[&[u8]], len: usize) -> io::Result<()> {
        let mask = match self.role {
            Role::Client => Some(self.masks.next()?),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin: true,
            opcode,
            mask,
            payload_len: len as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        self.wbuf.reserve(head_len + len);
        self.wbuf.extend_from_slice(&head[..head_len]);
        let start = self.wbuf.len();
        for part in payload {
            self.wbuf.extend_from_slice(part);
        }
        if let Some(key) = mask {
            apply_mask(&mut self.wbuf[start..], key, 0);
        }
        if opcode == OpCode::Close {
            self.close_committed = true;
        }
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> WsByteStream<S> {
    /// Writes `wbuf` out, then any queued pong and close frame. `Ready(Ok)` means
    /// everything committed so far has been handed to `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.wpos < self.wbuf.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wpos += n;
            }
            self.wpos = 0;
            if self.wbuf.capacity() > WRITE_RETAIN {
                self.wbuf = Vec::new();
            } else {
                self.wbuf.clear();
            }
            if let Some(pong) = self.pong.take()
                && !self.close_committed
            {
                self.commit_frame(OpCode::Pong, &[pong.payload()], pong.payload().len())?;
            } else if let Some(close) = self.close.take()
                && !self.close_committed
            {
                self.commit_frame(OpCode::Close, &[close.payload()], close.payload().len())?;
            } else {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Sends what a read queued (a pong, a close answer) without waiting, unless a
    /// writer is already waiting on `io`: it will send them itself.
    fn try_send_control(&mut self, cx: &mut Context<'_>) {
        let owed = self.wpos < self.wbuf.len() || self.pong.is_some() || self.close.is_some();
        if owed && !self.write_blocked {
            // An error here resurfaces on the next write.
            let _ = self.poll_drain(cx);
        }
    }

    /// One frame with the first bytes of `bufs` (at most [`WRITE_FRAME_MAX`]).
    fn poll_write_frame(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Draining may commit a queued close; nothing may follow it.
        ready!(self.poll_drain(cx))?;
        if self.close_committed {
            return Poll::Ready(Err(closed()));
        }
        let mut parts: [&[u8]; MAX_IOV - 1] = [&[]; MAX_IOV - 1];
        let mut count = 0;
        let mut total = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            if count == parts.len() || total == WRITE_FRAME_MAX {
                break;
            }
            let take = buf.len().min(WRITE_FRAME_MAX - total);
            parts[count] = &buf[..take];
            count += 1;
            total += take;
        }
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let parts = &parts[..count];
        if self.role == Role::Server && self.wbuf.is_empty() && self.io.is_write_vectored() {
            return self.poll_write_vectored_frame(cx, parts, total);
        }
        self.commit_frame(OpCode::Binary, parts, total)?;
        // The frame is committed: report it accepted even if `io` is not ready yet.
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(total)),
        }
    }

    /// Server role: header and payload in one vectored write, no copy; whatever `io`
    /// did not take is copied to `wbuf`, since the header already promised it.
    fn poll_write_vectored_frame(
        &mut self,
        cx: &mut Context<'_>,
        parts: &[&[u8]],
        total: usize,
    ) -> Poll<io::Result<usize>> {
        let header = FrameHeader {
            fin: true,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: total as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        iov[0] = IoSlice::new(&head[..head_len]);
        for (slot, part) in iov[1..].iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        let iov = &iov[..=parts.len()];
        let mut sent = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, iov))?;
        if sent == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        for slice in iov {
            let skip = sent.min(slice.len());
            sent -= skip;
            self.wbuf.extend_from_slice(&slice[skip..]);
        }
        Poll::Ready(Ok(total))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsByteStream<S> {
    /// Reads more bytes into `rbuf` without zeroing: `Ready(Ok(0))` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < DIRECT_READ_MIN {
            // At most a partial header is kept, so this reuses the allocation.
            self.rbuf.reserve(
                READ_CHUNK
                    .saturating_sub(self.rbuf.len())
                    .max(DIRECT_READ_MIN),
            );
        }
        let poll = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf);
        if poll.is_pending() {
            self.release_idle_read_buffer();
        }
        poll
    }

    fn release_idle_read_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// The connection ended: between frames that is EOF, inside one it is an error.
    fn end_of_input(&mut self) -> io::Result<()> {
        let mid_frame = !self.rbuf.is_empty()
            || self.decoder.in_message()
            || matches!(self.read, ReadState::Payload { remaining, .. } if remaining > 0);
        self.read = ReadState::Eof;
        if mid_frame {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a websocket message",
            ));
        }
        Ok(())
    }

    fn on_control(&mut self, opcode: OpCode, payload: &[u8]) {
        match opcode {
            OpCode::Ping if !self.close_committed => self.pong = Some(Control::new(payload)),
            OpCode::Close => {
                self.read = ReadState::Eof;
                if !self.close_committed && self.close.is_none() {
                    // Echo the status code, as RFC 6455 §5.5.1 suggests.
                    self.close = Some(Control::new(payload.get(..2).unwrap_or(&[])));
                }
            }
            _ => {}
        }
    }

    /// Handles the frame header at the start of `rbuf`. `Ok(false)`: more bytes needed.
    fn next_header(&mut self, cx: &mut Context<'_>) -> Result<bool, FrameError> {
        let Some((header, head_len)) = self.decoder.decode_header(&self.rbuf)? else {
            return Ok(false);
        };
        if !header.opcode.is_control() {
            self.rbuf.advance(head_len);
            self.read = ReadState::Payload {
                remaining: header.payload_len,
                mask: header.mask,
                offset: 0,
            };
            return Ok(true);
        }
        // Control frames are handled whole, from `rbuf` (they are at most 139 bytes).
        let end = head_len + header.payload_len as usize;
        if self.rbuf.len() < end {
            return Ok(false);
        }
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let payload = &mut payload[..end - head_len];
        payload.copy_from_slice(&self.rbuf[head_len..end]);
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        self.rbuf.advance(end);
        self.on_control(header.opcode, payload);
        // Answer now, so that a later ping in the same read does not replace this pong.
        self.try_send_control(cx);
        Ok(true)
    }

    fn poll_read_frames(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        loop {
            let delivered = buf.filled().len() > start;
            match self.read {
                ReadState::Eof => return Poll::Ready(Ok(())),
                ReadState::Failed(ref e) if !delivered => {
                    return Poll::Ready(Err(invalid(e.clone())));
                }
                ReadState::Failed(_) => return Poll::Ready(Ok(())),
                ReadState::Header => match self.next_header(cx) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        self.read = ReadState::Failed(e);
                        continue;
                    }
                },
                ReadState::Payload {
                    remaining,
                    mask,
                    offset,
                } => {
                    if remaining == 0 {
                        self.read = ReadState::Header;
                        continue;
                    }
                    if buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let want = remaining.min(buf.remaining() as u64) as usize;
                    let n = if !self.rbuf.is_empty() {
                        let n = want.min(self.rbuf.len());
                        buf.put_slice(&self.rbuf[..n]);
                        self.rbuf.advance(n);
                        n
                    } else if delivered {
                        return Poll::Ready(Ok(()));
                    } else if want >= DIRECT_READ_MIN {
                        let dst = buf.initialize_unfilled_to(want);
                        let mut direct = ReadBuf::new(dst);
                        let poll = Pin::new(&mut self.io).poll_read(cx, &mut direct);
                        if poll.is_pending() {
                            self.release_idle_read_buffer();
                        }
                        ready!(poll)?;
                        let n = direct.filled().len();
                        if n == 0 {
                            self.end_of_input()?;
                            return Poll::Ready(Ok(()));
                        }
                        buf.advance(n);
                        n
                    } else {
                        if ready!(self.poll_fill(cx))? == 0 {
                            self.end_of_input()?;
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    };
                    if let Some(key) = mask {
                        let filled = buf.filled_mut();
                        let at = filled.len() - n;
                        apply_mask(&mut filled[at..], key, offset);
                    }
                    self.read = ReadState::Payload {
                        remaining: remaining - n as u64,
                        mask,
                        offset: (offset + n) % 4,
                    };
                    continue;
                }
            }
            // A header (or a whole control frame) needs more bytes.
            if delivered {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                self.end_of_input()?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = this.poll_read_frames(cx, buf);
        this.try_send_control(cx);
        poll
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = this.poll_write_frame(cx, bufs);
        this.write_blocked = poll.is_pending();
        poll
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        };
        this.write_blocked = poll.is_pending();
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_committed && this.close.is_none() {
            this.close = Some(Control::new(&NORMAL_CLOSURE));
        }
        let poll = match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        };
        this.write_blocked = poll.is_pending();
        poll
    }
}
