//! The PROXY protocol (versions 1 and 2, as HAProxy specifies them): the header an L4
//! balancer puts in front of a connection to say which client it carries, so that
//! per-source limits see the client instead of the balancer.
//!
//! Only peers named with `--proxy-protocol-from` may send it ([`client_behind`]), and
//! they must: a
//! connection from one of them that does not start with a valid header is dropped, and
//! a header from anyone else is never read (it fails the TLS handshake like any other
//! garbage). The header is read exactly, never a byte past it, so the TLS stream behind
//! it is untouched. Its length is bounded before anything is allocated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::forwarded::TrustedProxies;

/// Version 2's twelve-byte signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 line, CRLF included (the specification's own bound).
pub const V1_MAX: usize = 107;
/// Longest version 2 address block accepted (addresses plus TLVs); balancers send a few
/// dozen bytes of TLVs at most.
pub const V2_MAX_BLOCK: usize = 512;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A connection the balancer made itself (a health check), or one it cannot
    /// describe: the TCP peer stands.
    Local,
    /// A client's connection, from `source` to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

impl ProxyHeader {
    /// The client: the header's source, else the TCP peer.
    pub fn client(self, peer: SocketAddr) -> SocketAddr {
        match self {
            ProxyHeader::Local => peer,
            ProxyHeader::Proxied { source, .. } => source,
        }
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("the connection ended inside the PROXY protocol header")]
    Truncated,
    #[error("no complete PROXY protocol header within the deadline")]
    TimedOut,
}

/// The client of a new connection from `peer`: the source of its PROXY header when
/// `peer` is one of `balancers` (which must send one, within `deadline`), else `peer`.
pub async fn client_behind<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
    balancers: &TrustedProxies,
    deadline: Duration,
) -> Result<SocketAddr, ProxyHeaderError> {
    if !balancers.contains(peer.ip()) {
        return Ok(peer);
    }
    match tokio::time::timeout(deadline, read_header(io)).await {
        Ok(header) => Ok(header?.client(peer)),
        Err(_) => Err(ProxyHeaderError::TimedOut),
    }
}

/// Reads one header from the start of `io`, exactly.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut start = [0u8; 16];
    read_exact(io, &mut start[..6]).await?;
    if start[..6] == *b"PROXY " {
        // Version 1: a line; read it a byte at a time so nothing past its end is taken.
        let mut line = Vec::with_capacity(V1_MAX);
        line.extend_from_slice(&start[..6]);
        while line.last() != Some(&b'\n') {
            if line.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed(
                    "version 1 line longer than 107 bytes",
                ));
            }
            let mut b = [0u8; 1];
            read_exact(io, &mut b).await?;
            line.push(b[0]);
        }
        return parse_v1(&line);
    }
    if start[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyHeaderError::Missing);
    }
    read_exact(io, &mut start[6..]).await?;
    let len = v2_block_len(&start)?;
    let mut block = vec![0u8; len];
    read_exact(io, &mut block).await?;
    parse_v2(&start, &block)
}

async fn read_exact<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    io.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyHeaderError::Truncated)
}

/// Parses a header held whole in `buf`; returns it and its length. For fuzzing and for
/// callers that already buffered the bytes.
pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyHeaderError> {
    // Which version, if any, shows in the first six bytes.
    if buf.len() < 6 {
        return Err(ProxyHeaderError::Truncated);
    }
    if buf.starts_with(b"PROXY ") {
        let end =
            buf.iter()
                .take(V1_MAX)
                .position(|b| *b == b'\n')
                .ok_or(if buf.len() >= V1_MAX {
                    ProxyHeaderError::Malformed("version 1 line longer than 107 bytes")
                } else {
                    ProxyHeaderError::Truncated
                })?;
        return parse_v1(&buf[..=end]).map(|h| (h, end + 1));
    }
    if buf.len() < 16 {
        return Err(
            if V2_SIGNATURE.starts_with(buf) || buf.starts_with(&V2_SIGNATURE) {
                ProxyHeaderError::Truncated
            } else {
                ProxyHeaderError::Missing
            },
        );
    }
    if buf[..12] != V2_SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    let start: &[u8; 16] = buf[..16]
        .try_into()
        .map_err(|_| ProxyHeaderError::Truncated)?;
    let len = v2_block_len(start)?;
    let block = buf.get(16..16 + len).ok_or(ProxyHeaderError::Truncated)?;
    parse_v2(start, block).map(|h| (h, 16 + len))
}

fn v2_block_len(start: &[u8; 16]) -> Result<usize, ProxyHeaderError> {
    if start[..12] != V2_SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    if start[12] >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed(
            "version 2 signature with another version",
        ));
    }
    let len = usize::from(u16::from_be_bytes([start[14], start[15]]));
    if len > V2_MAX_BLOCK {
        return Err(ProxyHeaderError::Malformed(
            "version 2 address block over 512 bytes",
        ));
    }
    Ok(len)
}

fn parse_v2(start: &[u8; 16], block: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    match start[12] & 0x0f {
        0 => return Ok(ProxyHeader::Local),
        1 => {}
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "version 2 command is neither LOCAL nor PROXY",
            ));
        }
    }
    let addr =
        |ip: IpAddr, port: &[u8]| SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]));
    match start[13] {
        // TCP over IPv4.
        0x11 => {
            let b = block.get(..12).ok_or(ProxyHeaderError::Malformed(
                "address block too short for IPv4",
            ))?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(ProxyHeader::Proxied {
                source: addr(src.into(), &b[8..10]),
                destination: addr(dst.into(), &b[10..12]),
            })
        }
        // TCP over IPv6.
        0x21 => {
            let b = block.get(..36).ok_or(ProxyHeaderError::Malformed(
                "address block too short for IPv6",
            ))?;
            let src: [u8; 16] = b[..16]
                .try_into()
                .map_err(|_| ProxyHeaderError::Truncated)?;
            let dst: [u8; 16] = b[16..32]
                .try_into()
                .map_err(|_| ProxyHeaderError::Truncated)?;
            Ok(ProxyHeader::Proxied {
                source: addr(IpAddr::V6(Ipv6Addr::from(src)).to_canonical(), &b[32..34]),
                destination: addr(IpAddr::V6(Ipv6Addr::from(dst)).to_canonical(), &b[34..36]),
            })
        }
        // Unspecified: the balancer does not know; the TCP peer stands.
        0x00 => Ok(ProxyHeader::Local),
        _ => Err(ProxyHeaderError::Malformed(
            "version 2 family is not TCP over IPv4 or IPv6",
        )),
    }
}

fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("version 1 line is not ASCII"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(bad("version 1 line does not end with CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::Missing);
    }
    let family = parts.next().ok_or(bad("version 1 line without a family"))?;
    if family == "UNKNOWN" {
        return Ok(ProxyHeader::Local);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad(
            "version 1 line needs source, destination and two ports",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(|a| IpAddr::V6(a).to_canonical()),
            _ => return Err(bad("version 1 family is not TCP4, TCP6 or UNKNOWN")),
        }
        .map_err(|_| bad("version 1 address does not match its family"))
    };
    let port = |s: &str| -> Result<u16, ProxyHeaderError> {
        // Decimal without sign or leading zeros, as the specification writes them.
        if s.is_empty()
            || s.len() > 5
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(bad("version 1 port is not a decimal port number"));
        }
        s.parse()
            .map_err(|_| bad("version 1 port is not a decimal port number"))
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(block.len() as u16).to_be_bytes());
        v.extend_from_slice(block);
        v
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    async fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyHeaderError>, Vec<u8>) {
        let mut io = bytes;
        let got = read_header(&mut io).await;
        (got, io.to_vec())
    }

    #[tokio::test]
    async fn version_1_and_2_name_the_client_and_leave_the_rest_unread() {
        let tls = b"\x16\x03\x01rest-of-the-stream";
        let mut v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 443\r\n".to_vec();
        v1.extend_from_slice(tls);
        let (got, rest) = read(&v1).await;
        assert_eq!(
            got,
            Ok(ProxyHeader::Proxied {
                source: sa("198.51.100.7:40000"),
                destination: sa("10.0.0.1:443")
            })
        );
        assert_eq!(rest, tls, "not a byte past the header");

        let mut block = vec![198, 51, 100, 7, 10, 0, 0, 1];
        block.extend_from_slice(&40000u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (AWS puts its endpoint id there) is skipped.
        block.extend_from_slice(&[0xea, 0x00, 0x03, b'v', b'p', b'c']);
        let mut h = v2(1, 0x11, &block);
        h.extend_from_slice(tls);
        let (got, rest) = read(&h).await;
        assert_eq!(
            got.unwrap().client(sa("10.0.0.9:1")),
            sa("198.51.100.7:40000")
        );
        assert_eq!(rest, tls);
        assert_eq!(parse(&h).unwrap().1, h.len() - tls.len());

        let mut block6 = Vec::new();
        block6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        block6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block6.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        let (got, _) = read(&v2(1, 0x21, &block6)).await;
        assert_eq!(
            got.unwrap().client(sa("10.0.0.9:1")),
            sa("[2001:db8::7]:40000")
        );
        let (got, _) = read(b"PROXY TCP6 ::ffff:198.51.100.7 ::1 1 2\r\n").await;
        assert_eq!(
            got.unwrap().client(sa("10.0.0.9:1")),
            sa("198.51.100.7:1"),
            "mapped read as IPv4"
        );
    }

    #[tokio::test]
    async fn local_unknown_and_unspecified_keep_the_peer() {
        let peer = sa("10.0.0.9:5000");
        for h in [
            v2(0, 0x11, &[0; 12]),
            v2(0, 0x00, &[]),
            v2(1, 0x00, &[]),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY UNKNOWN ff:: ff:: 1 2\r\n".to_vec(),
        ] {
            let (got, rest) = read(&h).await;
            assert_eq!(got.unwrap().client(peer), peer, "{h:?}");
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn every_malformed_header_is_refused() {
        let mut long_block = v2(1, 0x11, &[0; 12]);
        long_block[14..16].copy_from_slice(&513u16.to_be_bytes());
        let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
            (
                b"\x16\x03\x01\x02\x00\x01\x00".to_vec(),
                ProxyHeaderError::Missing,
            ),
            (
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                ProxyHeaderError::Missing,
            ),
            (b"PROXY".to_vec(), ProxyHeaderError::Truncated),
            (b"GET".to_vec(), ProxyHeaderError::Truncated),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2".to_vec(),
                ProxyHeaderError::Truncated,
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 line does not end with CRLF"),
            ),
            (
                [b"PROXY ".as_slice(), &[b'x'; 120]].concat(),
                ProxyHeaderError::Malformed("version 1 line longer than 107 bytes"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 family is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 address does not match its family"),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 address does not match its family"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 port is not a decimal port number"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 port is not a decimal port number"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 port is not a decimal port number"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
                ProxyHeaderError::Malformed(
                    "version 1 line needs source, destination and two ports",
                ),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed(
                    "version 1 line needs source, destination and two ports",
                ),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                ProxyHeaderError::Malformed(
                    "version 1 line needs source, destination and two ports",
                ),
            ),
            (
                b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n".to_vec(),
                ProxyHeaderError::Malformed("version 1 line is not ASCII"),
            ),
            (V2_SIGNATURE[..10].to_vec(), ProxyHeaderError::Truncated),
            (
                {
                    let mut h = v2(1, 0x11, &[0; 12]);
                    h[12] = 0x11;
                    h
                },
                ProxyHeaderError::Malformed("version 2 signature with another version"),
            ),
            (
                v2(2, 0x11, &[0; 12]),
                ProxyHeaderError::Malformed("version 2 command is neither LOCAL nor PROXY"),
            ),
            (
                v2(1, 0x11, &[0; 11]),
                ProxyHeaderError::Malformed("address block too short for IPv4"),
            ),
            (
                v2(1, 0x21, &[0; 35]),
                ProxyHeaderError::Malformed("address block too short for IPv6"),
            ),
            (
                v2(1, 0x12, &[0; 12]),
                ProxyHeaderError::Malformed("version 2 family is not TCP over IPv4 or IPv6"),
            ),
            (
                v2(1, 0x31, &[0; 216]),
                ProxyHeaderError::Malformed("version 2 family is not TCP over IPv4 or IPv6"),
            ),
            (
                long_block.clone(),
                ProxyHeaderError::Malformed("version 2 address block over 512 bytes"),
            ),
            (
                v2(1, 0x11, &[0; 12])[..20].to_vec(),
                ProxyHeaderError::Truncated,
            ),
        ];
        for (bytes, want) in cases {
            let (got, _) = read(&bytes).await;
            assert_eq!(got, Err(want.clone()), "read {bytes:?}");
            assert_eq!(parse(&bytes).map(|(h, _)| h), Err(want), "parse {bytes:?}");
        }
    }
}
