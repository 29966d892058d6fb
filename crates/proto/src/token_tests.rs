use super::*;
use proptest::prelude::*;

fn sample() -> TunnelToken {
    TunnelToken::generate(
        TunnelId::parse("tnl_abc123").unwrap(),
        EdgeAddr::parse("edge.example.com:7844").unwrap(),
        Some(CaPin::from_der(b"ca der")),
    )
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn roundtrip_starts_with_eyj() {
    let t = sample();
    let s = t.encode();
    assert!(s.starts_with("eyJ"), "{s}");
    assert_eq!(TunnelToken::parse(&s).unwrap(), t);
    assert_eq!(TunnelToken::parse(&format!("  {s}\n")).unwrap(), t);
}

#[test]
fn debug_redacts_secret() {
    let t = sample();
    let dbg = format!("{t:?}");
    assert!(!dbg.contains(t.secret.expose()), "{dbg}");
    assert!(dbg.contains("tnl_abc123"));
}

#[test]
fn secret_hash_verifies_in_constant_time_helper() {
    let t = sample();
    let stored = t.secret_hash();
    assert!(verify_secret(&t.secret, &stored));
    assert!(!verify_secret(&generate_secret(), &stored));
}

#[test]
fn errors_name_the_problem() {
    assert_eq!(TunnelToken::parse(""), Err(TokenError::Empty));
    assert_eq!(TunnelToken::parse("abc"), Err(TokenError::NotEyJ));
    assert_eq!(TunnelToken::parse("eyJ!!!"), Err(TokenError::Base64));
    assert!(matches!(
        TunnelToken::parse(&b64("{\"tunnel_id\": 5")),
        Err(TokenError::Json(_))
    ));
    let secret = generate_secret();
    let s = secret.expose();
    assert_eq!(
        TunnelToken::parse(&b64(r#"{"tunnel_id":"tnl_a","edge":"e:1"}"#)),
        Err(TokenError::MissingField("secret"))
    );
    assert_eq!(
        TunnelToken::parse(&b64(&format!(r#"{{"tunnel_id":"tnl_a","secret":"{s}"}}"#))),
        Err(TokenError::MissingField("edge"))
    );
    assert_eq!(
        TunnelToken::parse(&b64(&format!(r#"{{"edge":"e:1","secret":"{s}"}}"#))),
        Err(TokenError::MissingField("tunnel_id"))
    );
    assert_eq!(
        TunnelToken::parse(&b64(&format!(
            r#"{{"tunnel_id":"tun_a","secret":"{s}","edge":"e:1"}}"#
        ))),
        Err(TokenError::BadTunnelId(TunnelIdError::Prefix))
    );
    assert_eq!(
        TunnelToken::parse(&b64(
            r#"{"tunnel_id":"tnl_a","secret":"short","edge":"e:1"}"#
        )),
        Err(TokenError::BadSecret)
    );
    assert!(matches!(
        TunnelToken::parse(&b64(&format!(
            r#"{{"tunnel_id":"tnl_a","secret":"{s}","edge":"e"}}"#
        ))),
        Err(TokenError::BadEdgeAddress(_))
    ));
    assert_eq!(
        TunnelToken::parse(&b64(&format!(
            r#"{{"tunnel_id":"tnl_a","secret":"{s}","edge":"e:1","edge_ca_sha256":"zz"}}"#
        ))),
        Err(TokenError::BadPin)
    );
    // Messages are what operators read: they must name the field.
    assert!(
        TokenError::MissingField("secret")
            .to_string()
            .contains("\"secret\"")
    );
}

#[test]
fn too_long_is_refused_before_decoding() {
    let long = format!("eyJ{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(TunnelToken::parse(&long), Err(TokenError::TooLong));
}

#[test]
fn edge_addresses() {
    assert_eq!(EdgeAddr::parse("[::1]:7844").unwrap().host(), "::1");
    assert_eq!(
        EdgeAddr::parse("[::1]:7844").unwrap().to_string(),
        "[::1]:7844"
    );
    assert_eq!(EdgeAddr::parse("127.0.0.1:1").unwrap().port(), 1);
    assert_eq!(
        EdgeAddr::parse("Edge.Example:80").unwrap().host(),
        "edge.example"
    );
    assert_eq!(EdgeAddr::parse("h:0"), Err(EdgeAddrError::BadPort));
    assert_eq!(EdgeAddr::parse("h:x"), Err(EdgeAddrError::BadPort));
    assert_eq!(EdgeAddr::parse("::1:80"), Err(EdgeAddrError::BadHost));
    assert_eq!(EdgeAddr::parse("a_b:80"), Err(EdgeAddrError::BadHost));
    assert_eq!(EdgeAddr::parse(":80"), Err(EdgeAddrError::BadHost));
}

#[test]
fn pin_matches_only_its_certificate() {
    let pin = CaPin::from_der(b"one");
    assert!(pin.matches(b"one"));
    assert!(!pin.matches(b"two"));
    assert_eq!(CaPin::parse_hex(&pin.to_hex()), Some(pin));
    assert_eq!(CaPin::parse_hex(&pin.to_hex().to_uppercase()), None);
}

proptest! {
    #[test]
    fn roundtrip_any_valid(id in "tnl_[A-Za-z0-9]{1,64}", host in "[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,10}){0,3}", port in 1u16.., pin in proptest::option::of(any::<[u8; 32]>())) {
        let t = TunnelToken {
            tunnel_id: TunnelId::parse(&id).unwrap(),
            secret: generate_secret(),
            edge: EdgeAddr::parse(&format!("{host}:{port}")).unwrap(),
            edge_ca_pin: pin.map(CaPin),
        };
        prop_assert_eq!(TunnelToken::parse(&t.encode()).unwrap(), t);
    }

    #[test]
    fn garbage_never_panics(s in "\\PC{0,200}") {
        let _ = TunnelToken::parse(&s);
        let _ = TunnelToken::parse(&format!("eyJ{s}"));
    }

    #[test]
    fn truncated_tokens_are_refused(cut in 1usize..100) {
        let s = sample().encode();
        let cut = cut.min(s.len() - 1);
        prop_assert!(TunnelToken::parse(&s[..s.len() - cut]).is_err());
    }
}
