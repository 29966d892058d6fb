//! Conventions for the HTTP/2 streams that follow the handshake.
//!
//! Each client session is one stream opened by the edge. HTTP/2 forbids the
//! connection-specific headers that an HTTP/1.1 upgrade relies on (`Connection`,
//! `Upgrade`) and has no `101`, so an upgrade is carried like this:
//!
//! * request (edge → connector): the client's method, path and end-to-end headers, plus
//!   [`UPGRADE_HEADER`] holding the client's `Upgrade` value. The request body is the
//!   byte stream from the client after the upgrade; end of body = client half-closed.
//! * response (connector → edge): if the origin switched protocols, status `200` with
//!   [`UPGRADED_HEADER`] holding the origin's `Upgrade` value and the origin's other
//!   `101` headers; the response body is the byte stream from the origin. Any other
//!   answer is an ordinary response that the edge relays as is.
//!
//! Plain requests travel as ordinary HTTP/2 requests and responses.

/// Request header: this stream is an HTTP/1.1 upgrade; the value is the `Upgrade` token.
pub const UPGRADE_HEADER: &str = "mcpt-upgrade";
/// Response header: the origin answered `101`; the value is its `Upgrade` token.
pub const UPGRADED_HEADER: &str = "mcpt-upgraded";
/// Response header set by the connector on answers it produced itself (not the origin),
/// naming the reason, e.g. `no_ingress` or `origin_unreachable`.
pub const CONNECTOR_ERROR_HEADER: &str = "mcpt-connector-error";

/// Body of the connector's answer when it has no origin configured.
pub const NO_INGRESS_MESSAGE: &str = "No ingress rules were defined";

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), `host`
/// (HTTP/2 carries it as `:authority`) and our own `mcpt-` headers, which only the
/// tunnel may set. Names must be lowercase. The edge also drops `authorization`: on the
/// outer request it carries the client access key, meant for the edge alone.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "host"
    ) || name.starts_with("mcpt-")
}
