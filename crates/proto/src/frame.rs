//! Handshake framing: `"MCPT"` magic, a one-byte kind, a big-endian `u16` payload length
//! and the payload. The length is capped at [`MAX_PAYLOAD`], so an unauthenticated peer
//! can make us buffer at most [`HEADER_LEN`] + [`MAX_PAYLOAD`] bytes per frame.

/// Every frame starts with these bytes: a peer speaking anything else is cut off at once.
pub const MAGIC: [u8; 4] = *b"MCPT";
/// Magic, kind and length.
pub const HEADER_LEN: usize = 7;
/// Largest payload accepted or produced.
pub const MAX_PAYLOAD: usize = 2048;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Hello,
    Accept,
    Reject,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Hello => 1,
            Self::Accept => 2,
            Self::Reject => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Hello),
            2 => Some(Self::Accept),
            3 => Some(Self::Reject),
            _ => None,
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic (peer is not speaking the mcp-tunnel protocol)")]
    BadMagic,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
}

/// A decoded frame borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub payload: &'a [u8],
}

/// Encodes one frame. Payloads over [`MAX_PAYLOAD`] are a bug of ours, reported as an error.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(kind.to_byte());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks as much of a header as `buf` holds; returns the whole frame length once known.
///
/// Validation is incremental: a wrong first byte is refused before any more is read.
pub fn check_header(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let magic_len = buf.len().min(MAGIC.len());
    if buf[..magic_len] != MAGIC[..magic_len] {
        return Err(FrameError::BadMagic);
    }
    if let Some(&k) = buf.get(4) {
        FrameKind::from_byte(k).ok_or(FrameError::UnknownKind(k))?;
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[5], buf[6]]));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok(Some(HEADER_LEN + len))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the frame and how many bytes it took. Bytes after it are left alone.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(total) = check_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let kind = FrameKind::from_byte(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
    Ok(Some((
        Frame {
            kind,
            payload: &buf[HEADER_LEN..total],
        },
        total,
    )))
}

/// How many more bytes complete the frame at the start of `buf` (never over-reads, so a
/// driver using it leaves whatever follows the frame in the socket).
pub fn bytes_needed(buf: &[u8]) -> usize {
    if buf.len() < HEADER_LEN {
        return HEADER_LEN - buf.len();
    }
    let len = usize::from(u16::from_be_bytes([buf[5], buf[6]])).min(MAX_PAYLOAD);
    (HEADER_LEN + len).saturating_sub(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_trailing_bytes_left_alone() {
        let mut bytes = encode(FrameKind::Accept, b"xyz").unwrap();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let (frame, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Accept);
        assert_eq!(frame.payload, b"xyz");
        assert_eq!(&bytes[used..], b"PRI * HTTP/2.0");
    }

    #[test]
    fn bad_magic_is_refused_on_first_byte() {
        assert_eq!(decode(b"G"), Err(FrameError::BadMagic));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(FrameError::BadMagic));
    }

    #[test]
    fn oversized_length_refused_before_payload_arrives() {
        let mut hdr = MAGIC.to_vec();
        hdr.push(1);
        hdr.extend_from_slice(&((MAX_PAYLOAD as u16) + 1).to_be_bytes());
        assert_eq!(decode(&hdr), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
        assert!(encode(FrameKind::Hello, &vec![0; MAX_PAYLOAD + 1]).is_err());
    }

    #[test]
    fn unknown_kind_refused() {
        assert_eq!(decode(b"MCPT\x09\x00\x00"), Err(FrameError::UnknownKind(9)));
    }

    proptest! {
        #[test]
        fn every_prefix_is_incomplete_not_an_error(payload in proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD)) {
            let bytes = encode(FrameKind::Hello, &payload).unwrap();
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]), Ok(None));
                prop_assert_eq!(bytes_needed(&bytes[..cut]) > 0, true);
            }
            prop_assert_eq!(bytes_needed(&bytes), 0);
            let (f, n) = decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(f.payload, &payload[..]);
            prop_assert_eq!(n, bytes.len());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = bytes_needed(&bytes);
        }
    }
}
