//! Networking pieces shared by every role: the WebSocket byte-stream adapter that carries
//! inner TLS, the byte pump between connections and tunnel streams, Go-style durations
//! and listen addresses.

pub mod duration;
pub mod listen;
pub mod metrics;
pub mod pipe;
pub mod ws;
