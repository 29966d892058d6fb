//! Sans-IO WebSocket frame headers (RFC 6455 §5.2) and the rules this tunnel holds them to.
//!
//! The tunnel negotiates no extension and carries only binary messages, so the rules are
//! narrower than the RFC's: every violation is refused with its own [`FrameError`], which
//! ends the stream (RFC 6455 §7.1.7 lets an endpoint fail the connection on any of them).

use super::MAX_MESSAGE_BYTES;

/// Longest header: 2 bytes, a 64-bit extended length and a masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// Largest payload of a close, ping or pong frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which end of the WebSocket this endpoint is: it decides who masks (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, masks what it sends.
    Client,
}

/// Frame opcodes known to RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, allowed between the
    /// fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

impl std::fmt::Display for OpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        })
    }
}

/// A frame header as it is on the wire (the payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    /// The masking key, present exactly on frames sent by a client.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Why a frame was refused. Each rule has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("websocket frame has reserved bits {bits:#05b} set, but no extension was negotiated")]
    ReservedBits { bits: u8 },
    #[error("websocket frame has unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("websocket {0} frame is fragmented; control frames must have FIN set")]
    FragmentedControl(OpCode),
    #[error("websocket {opcode} frame carries {len} bytes; control frames carry at most 125")]
    ControlTooLong { opcode: OpCode, len: u64 },
    #[error("unmasked websocket frame from the client; clients must mask (RFC 6455 §5.1)")]
    UnmaskedFromClient,
    #[error("masked websocket frame from the server; servers must not mask (RFC 6455 §5.1)")]
    MaskedFromServer,
    #[error("websocket frame length has its most significant bit set")]
    LengthMsbSet,
    // The wording predates this codec; logs and tests look for it.
    #[error("text websocket message on a binary tunnel")]
    Text,
    #[error("websocket continuation frame without a message in progress")]
    ContinuationWithoutStart,
    #[error("new websocket {0} frame while a fragmented message is still open")]
    MessageStillOpen(OpCode),
    #[error("websocket frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: u64, max: usize },
}

impl FrameHeader {
    /// Parses one header from the start of `buf` as received by `role`, returning it and
    /// its length, or `Ok(None)` when `buf` is too short to decide. Rules are checked as
    /// soon as the bytes they need are there, so a refusal never waits for more input.
    /// Stateless: message fragmentation is [`FrameDecoder`]'s job.
    pub fn parse(buf: &[u8], role: Role) -> Result<Option<(Self, usize)>, FrameError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let bits = (b0 >> 4) & 0b111;
        if bits != 0 {
            return Err(FrameError::ReservedBits { bits });
        }
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() && !fin {
            return Err(FrameError::FragmentedControl(opcode));
        }
        if opcode == OpCode::Text {
            return Err(FrameError::Text);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (role, masked) {
            (Role::Server, false) => return Err(FrameError::UnmaskedFromClient),
            (Role::Client, true) => return Err(FrameError::MaskedFromServer),
            _ => {}
        }
        let (payload_len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(FrameError::LengthMsbSet);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlTooLong {
                opcode,
                len: payload_len,
            });
        }
        if payload_len > MAX_MESSAGE_BYTES as u64 {
            return Err(FrameError::TooLong {
                len: payload_len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let mask = if masked {
            let Some(b) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        let header = Self {
            fin,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, at)))
    }

    /// Writes the header (shortest length encoding) into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// Header parsing plus the one piece of state the rules need: whether a fragmented
/// message is open (a continuation must follow a started message; a new message must
/// wait for the previous one's final fragment).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    role: Role,
    in_message: bool,
}

impl FrameDecoder {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            in_message: false,
        }
    }

    /// Whether a fragmented message has started and not yet ended.
    pub fn in_message(&self) -> bool {
        self.in_message
    }

    /// Like [`FrameHeader::parse`], and also enforces fragmentation. A header is only
    /// accounted for once returned, so calling again after `Ok(None)` is fine.
    pub fn decode_header(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let Some((header, len)) = FrameHeader::parse(buf, self.role)? else {
            return Ok(None);
        };
        match header.opcode {
            OpCode::Continuation if !self.in_message => {
                return Err(FrameError::ContinuationWithoutStart);
            }
            op @ (OpCode::Binary | OpCode::Text) if self.in_message => {
                return Err(FrameError::MessageStillOpen(op));
            }
            _ => {}
        }
        if !header.opcode.is_control() {
            self.in_message = !header.fin;
        }
        Ok(Some((header, len)))
    }
}

/// XORs `data` with `key`, `data` starting `offset` bytes into the payload (RFC 6455
/// §5.3). Eight bytes at a time: this runs over every byte of the tunnel.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let k = [
        key[offset % 4],
        key[(offset + 1) % 4],
        key[(offset + 2) % 4],
        key[(offset + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase is unchanged.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn parse_server(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        FrameHeader::parse(buf, Role::Server)
    }

    #[test]
    fn encode_then_parse_round_trips_each_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            for mask in [None, Some(KEY)] {
                let h = FrameHeader {
                    fin: true,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = h.encode(&mut out);
                assert_eq!(n, header_len + if mask.is_some() { 4 } else { 0 });
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                assert_eq!(FrameHeader::parse(&out[..n], role), Ok(Some((h, n))));
                // Every strict prefix asks for more bytes rather than failing.
                for cut in 0..n {
                    assert_eq!(FrameHeader::parse(&out[..cut], role), Ok(None), "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn non_minimal_length_encoding_is_accepted() {
        let buf = [0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4];
        let (h, n) = parse_server(&buf).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (5, 8));
        let buf = [0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4];
        assert_eq!(parse_server(&buf).unwrap().unwrap().0.payload_len, 5);
    }

    #[test]
    fn reserved_bits_are_refused() {
        let err = parse_server(&[0x82 | 0x40]).unwrap_err();
        assert_eq!(err, FrameError::ReservedBits { bits: 0b100 });
        assert!(
            err.to_string().contains("no extension was negotiated"),
            "{err}"
        );
        assert!(matches!(
            parse_server(&[0x92]),
            Err(FrameError::ReservedBits { bits: 1 })
        ));
    }

    #[test]
    fn unknown_opcodes_are_refused() {
        for op in [0x3, 0x7, 0xB, 0xF] {
            assert_eq!(
                parse_server(&[0x80 | op]),
                Err(FrameError::UnknownOpcode(op))
            );
        }
    }

    #[test]
    fn fragmented_control_frames_are_refused() {
        for (op, code) in [
            (0x8, OpCode::Close),
            (0x9, OpCode::Ping),
            (0xA, OpCode::Pong),
        ] {
            assert_eq!(
                parse_server(&[op]),
                Err(FrameError::FragmentedControl(code))
            );
        }
    }

    #[test]
    fn control_frames_over_125_bytes_are_refused() {
        let err = parse_server(&[0x89, 0x80 | 126, 0, 126]).unwrap_err();
        assert_eq!(
            err,
            FrameError::ControlTooLong {
                opcode: OpCode::Ping,
                len: 126
            }
        );
        assert!(err.to_string().contains("at most 125"), "{err}");
        assert!(
            parse_server(&[0x89, 0x80 | 125, 1, 2, 3, 4])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn server_refuses_unmasked_frames() {
        let err = parse_server(&[0x82, 0x05]).unwrap_err();
        assert_eq!(err, FrameError::UnmaskedFromClient);
        assert!(err.to_string().contains("clients must mask"), "{err}");
    }

    #[test]
    fn client_refuses_masked_frames() {
        let err = FrameHeader::parse(&[0x82, 0x85], Role::Client).unwrap_err();
        assert_eq!(err, FrameError::MaskedFromServer);
    }

    #[test]
    fn length_with_msb_set_is_refused() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            FrameHeader::parse(&buf, Role::Client),
            Err(FrameError::LengthMsbSet)
        );
    }

    #[test]
    fn text_frames_are_refused_with_the_existing_message() {
        let err = parse_server(&[0x81]).unwrap_err();
        assert_eq!(err.to_string(), "text websocket message on a binary tunnel");
    }

    #[test]
    fn frames_over_the_limit_are_refused_from_the_header_alone() {
        // 64 MiB announced: refused with the length bytes, before any payload arrives.
        let len = 64u64 << 20;
        let mut buf = vec![0x82, 127];
        buf.extend_from_slice(&len.to_be_bytes());
        let err = FrameHeader::parse(&buf, Role::Client).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLong {
                len,
                max: MAX_MESSAGE_BYTES
            }
        );
        let mut ok = vec![0x82, 127];
        ok.extend_from_slice(&(MAX_MESSAGE_BYTES as u64).to_be_bytes());
        assert!(FrameHeader::parse(&ok, Role::Client).unwrap().is_some());
    }

    #[test]
    fn continuation_without_a_started_message_is_refused() {
        let mut d = FrameDecoder::new(Role::Client);
        assert_eq!(
            d.decode_header(&[0x80, 0]),
            Err(FrameError::ContinuationWithoutStart)
        );
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_refused() {
        let mut d = FrameDecoder::new(Role::Client);
        assert!(d.decode_header(&[0x02, 1]).unwrap().is_some());
        assert!(d.in_message());
        // Control frames may interleave; a continuation may follow.
        assert!(d.decode_header(&[0x89, 0]).unwrap().is_some());
        assert!(d.decode_header(&[0x00, 1]).unwrap().is_some());
        assert_eq!(
            d.decode_header(&[0x82, 1]),
            Err(FrameError::MessageStillOpen(OpCode::Binary))
        );
        // The final fragment closes the message; a new one may start.
        assert!(d.decode_header(&[0x80, 1]).unwrap().is_some());
        assert!(!d.in_message());
        assert!(d.decode_header(&[0x82, 1]).unwrap().is_some());
    }

    #[test]
    fn masking_matches_the_bytewise_definition_at_every_offset() {
        let data: Vec<u8> = (0..37u8).collect();
        let key = [0xA1, 0x5B, 0x07, 0xF0];
        for offset in 0..8 {
            let mut fast = data.clone();
            apply_mask(&mut fast, key, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(i + offset) % 4])
                .collect();
            assert_eq!(fast, slow, "offset {offset}");
        }
    }
}
