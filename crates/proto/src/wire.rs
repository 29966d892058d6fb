//! Strict primitive codecs for frame payloads: big-endian integers and length-prefixed
//! strings. The reader never trusts a length it has not bounds-checked and refuses
//! trailing bytes, so every payload has exactly one encoding.

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{field} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("{0} unexpected bytes after the payload")]
    TrailingBytes(usize),
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn array16(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        let mut out = [0u8; 16];
        out.copy_from_slice(self.bytes(16, what)?);
        Ok(out)
    }

    /// A string with a one-byte length prefix, restricted to printable ASCII so that a
    /// peer cannot smuggle control characters into our logs.
    pub(crate) fn str8(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u8(what)?);
        printable(self.bytes(n, what)?, what)
    }

    /// Like [`Reader::str8`] with a two-byte length prefix.
    pub(crate) fn str16(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u16(what)?);
        printable(self.bytes(n, what)?, what)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

fn printable<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    let s = std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8(what))?;
    if s.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
        return Err(DecodeError::Invalid {
            field: what,
            reason: "contains characters other than printable ASCII",
        });
    }
    Ok(s)
}

#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Writes a string with a one-byte length, replacing what the reader would refuse
    /// (non-printable characters) and cutting what does not fit.
    pub(crate) fn str8(&mut self, s: &str) {
        let s = sanitize(s, usize::from(u8::MAX));
        self.u8(s.len() as u8);
        self.bytes(s.as_bytes());
    }

    pub(crate) fn str16(&mut self, s: &str, max: usize) {
        let s = sanitize(s, max.min(usize::from(u16::MAX)));
        self.u16(s.len() as u16);
        self.bytes(s.as_bytes());
    }
}

/// `s` with non-printable-ASCII characters replaced by `?`, cut to at most `max` bytes.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(max)
        .collect()
}
