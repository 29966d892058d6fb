//! Properties over generated inputs: the validators never panic, and wildcard matching
//! covers exactly one label.

use mcp_tunnel_pki::validate::{host_matches, validate_ca_der, validate_ca_pem};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

proptest! {
    #[test]
    fn ca_pem_validation_never_panics(text in "(-----(BEGIN|END) [A-Z ]{0,20}-----\n|[A-Za-z0-9+/=]{0,80}\n| *\r?\n){0,12}") {
        let _ = validate_ca_pem(&text, 1_800_000_000);
    }

    #[test]
    fn ca_der_validation_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = validate_ca_der(&bytes, 1_800_000_000);
    }

    #[test]
    fn wildcard_covers_one_label_only(
        first in label(),
        second in label(),
        domain in proptest::collection::vec(label(), 2..4),
    ) {
        let domain = domain.join(".");
        let pattern = format!("*.{domain}");
        let one = format!("{first}.{domain}");
        let upper = one.to_uppercase();
        let two = format!("{first}.{second}.{domain}");
        let dotted = format!("{one}.");
        prop_assert!(host_matches(&pattern, &one));
        prop_assert!(host_matches(&pattern, &upper));
        prop_assert!(!host_matches(&pattern, &two));
        prop_assert!(!host_matches(&pattern, &domain));
        prop_assert!(host_matches(&one, &dotted));
    }
}
