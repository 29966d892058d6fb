use super::*;
use crate::token::generate_secret;
use proptest::prelude::*;

const T: Duration = Duration::from_secs(5);

fn hello() -> Hello {
    Hello {
        versions: vec![ProtocolVersion(7), ProtocolVersion::H2_V1],
        tunnel_id: TunnelId::parse("tnl_x1").unwrap(),
        secret: generate_secret(),
        conn_index: 2,
        instance_id: InstanceId([9; 16]),
        software_version: "0.1.0".into(),
    }
}

/// Feeds `bytes` one at a time, honouring `bytes_needed`, as a driver would.
fn drive_server(
    s: &mut ServerHandshake,
    bytes: &[u8],
    now: Instant,
) -> Result<Option<ServerEvent>, HandshakeError> {
    let mut off = 0;
    while off < bytes.len() {
        let p = s.feed(&bytes[off..off + 1], now)?;
        off += p.consumed;
        if p.event.is_some() {
            return Ok(p.event);
        }
    }
    Ok(None)
}

#[test]
fn full_handshake_accept() {
    let now = Instant::now();
    let h = hello();
    let mut c = ClientHandshake::new(&h, now, T).unwrap();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    let out = c.poll_transmit().unwrap();
    assert!(c.poll_transmit().is_none());
    assert_eq!(s.bytes_needed(), frame::HEADER_LEN);
    let ev = drive_server(&mut s, &out, now).unwrap().unwrap();
    let ServerEvent::Hello {
        hello: got,
        version,
    } = ev;
    assert_eq!(got, h);
    assert_eq!(version, ProtocolVersion::H2_V1);
    assert_eq!(s.bytes_needed(), 0);

    let mut accept = s.accept(ConnectionId([1; 16]), "edge-1").unwrap();
    // The HTTP/2 preface that follows must not be eaten by the handshake.
    accept.extend_from_slice(b"PRI * HTTP/2.0");
    let p = c.feed(&accept, now).unwrap();
    assert_eq!(&accept[p.consumed..], b"PRI * HTTP/2.0");
    assert_eq!(
        p.event,
        Some(ClientEvent::Accepted(Accept {
            version: ProtocolVersion::H2_V1,
            connection_id: ConnectionId([1; 16]),
            edge_id: "edge-1".into()
        }))
    );
    assert!(
        !c.is_expired(now + T * 10),
        "finished handshakes do not expire"
    );
}

#[test]
fn reject_reaches_client() {
    let now = Instant::now();
    let mut c = ClientHandshake::new(&hello(), now, T).unwrap();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    drive_server(&mut s, &c.poll_transmit().unwrap(), now).unwrap();
    let rej = s
        .reject(RejectCode::TokenRejected, "token rejected\n")
        .unwrap();
    assert!(s.accept(ConnectionId([0; 16]), "e").is_err());
    let p = c.feed(&rej, now).unwrap();
    assert_eq!(
        p.event,
        Some(ClientEvent::Rejected(Reject::new(
            RejectCode::TokenRejected,
            "token rejected?"
        )))
    );
}

#[test]
fn no_common_version_gets_unsupported_reply() {
    let now = Instant::now();
    let mut h = hello();
    h.versions = vec![ProtocolVersion(42)];
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    let err = s.feed(&h.encode().unwrap(), now).unwrap_err();
    assert_eq!(err.reply(), Some(RejectCode::UnsupportedVersion));
    let bytes = s.reject(RejectCode::UnsupportedVersion, "need 1").unwrap();
    assert_eq!(
        frame::decode(&bytes).unwrap().unwrap().0.kind,
        frame::FrameKind::Reject
    );
}

#[test]
fn client_refuses_version_it_did_not_offer() {
    let now = Instant::now();
    let mut c = ClientHandshake::new(&hello(), now, T).unwrap();
    let a = Accept {
        version: ProtocolVersion(3),
        connection_id: ConnectionId([0; 16]),
        edge_id: "e".into(),
    };
    assert!(matches!(
        c.feed(&a.encode().unwrap(), now),
        Err(HandshakeError::NoCommonVersion { .. })
    ));
}

#[test]
fn deadline_is_enforced() {
    let now = Instant::now();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    assert!(!s.is_expired(now));
    assert!(s.is_expired(now + T));
    assert_eq!(s.feed(b"MC", now + T), Err(HandshakeError::TimedOut));
}

#[test]
fn garbage_refused_at_first_byte_without_reply() {
    let now = Instant::now();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    let err = s.feed(b"GET / HTTP/1.1\r\n", now).unwrap_err();
    assert_eq!(err, HandshakeError::Frame(FrameError::BadMagic));
    assert_eq!(err.reply(), None);
}

#[test]
fn server_refuses_non_hello_and_trailing_bytes() {
    let now = Instant::now();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    let reject = Reject::new(RejectCode::Internal, "x").encode().unwrap();
    assert!(matches!(
        s.feed(&reject, now),
        Err(HandshakeError::UnexpectedFrame { .. })
    ));

    let mut payload = hello().encode().unwrap()[frame::HEADER_LEN..].to_vec();
    payload.push(0);
    let bytes = frame::encode(frame::FrameKind::Hello, &payload).unwrap();
    let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
    assert_eq!(
        s.feed(&bytes, now),
        Err(HandshakeError::Decode(DecodeError::TrailingBytes(1)))
    );
}

#[test]
fn hello_debug_redacts_secret() {
    let h = hello();
    assert!(!format!("{h:?}").contains(h.secret.expose()));
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        proptest::collection::vec(1u16.., 1..=MAX_VERSIONS),
        "tnl_[A-Za-z0-9]{1,64}",
        any::<u8>(),
        any::<[u8; 16]>(),
        "[ -~]{0,255}",
    )
        .prop_map(|(v, id, idx, inst, sw)| Hello {
            versions: v.into_iter().map(ProtocolVersion).collect(),
            tunnel_id: TunnelId::parse(&id).unwrap(),
            secret: generate_secret(),
            conn_index: idx,
            instance_id: InstanceId(inst),
            software_version: sw,
        })
}

proptest! {
    #[test]
    fn hello_roundtrip(h in arb_hello()) {
        let bytes = h.encode().unwrap();
        let (f, n) = frame::decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(Hello::decode(f.payload).unwrap(), h);
    }

    #[test]
    fn reject_roundtrip(code in 1u8..=6, msg in "[ -~]{0,1024}") {
        let r = Reject::new(RejectCode::from_byte(code).unwrap(), msg);
        let bytes = r.encode().unwrap();
        prop_assert_eq!(Reject::decode(&bytes[frame::HEADER_LEN..]).unwrap(), r);
    }

    #[test]
    fn truncated_hello_never_completes(h in arb_hello(), cut in 1usize..64) {
        let bytes = h.encode().unwrap();
        let cut = cut.min(bytes.len());
        let now = Instant::now();
        let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
        let p = s.feed(&bytes[..bytes.len() - cut], now).unwrap();
        prop_assert_eq!(p.event, None);
        prop_assert_eq!(s.bytes_needed(), cut);
    }

    #[test]
    fn garbage_never_panics_server(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let now = Instant::now();
        let mut s = ServerHandshake::new(ProtocolVersion::SUPPORTED, now, T);
        if let Ok(p) = s.feed(&bytes, now) {
            prop_assert!(p.consumed <= frame::HEADER_LEN + frame::MAX_PAYLOAD);
        }
        let _ = Hello::decode(&bytes);
        let _ = Accept::decode(&bytes);
        let _ = Reject::decode(&bytes);
    }

    #[test]
    fn garbage_with_magic_never_panics_client(body in proptest::collection::vec(any::<u8>(), 0..300), kind in 0u8..5) {
        let mut bytes = frame::MAGIC.to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&body);
        let now = Instant::now();
        let mut c = ClientHandshake::new(&hello(), now, T).unwrap();
        let _ = c.feed(&bytes, now);
    }
}
