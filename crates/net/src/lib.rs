//! Networking pieces shared by every role: the WebSocket byte-stream adapter that carries
//! inner TLS, the byte pump between connections and tunnel streams, Go-style durations,
//! listen addresses, host-name normalisation and the client address behind trusted
//! reverse proxies.

pub mod duration;
pub mod forwarded;
pub mod host;
pub mod listen;
pub mod metrics;
pub mod pipe;
pub mod proxy_protocol;
pub mod ws;
