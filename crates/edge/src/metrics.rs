//! The edge's Prometheus metrics. Labels carry outcomes and reasons, never tunnel
//! payloads, keys or client addresses.

use mcp_tunnel_net::metrics::{CounterVec, Gauge};

#[derive(Debug)]
pub struct EdgeMetrics {
    pub connector_connections: Gauge,
    pub pending_handshakes: Gauge,
    pub handshakes: CounterVec,
    pub client_requests: CounterVec,
    pub active_sessions: Gauge,
    pub bytes: CounterVec,
    pub severed: CounterVec,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self {
            connector_connections: Gauge::new(
                "mcpt_edge_connector_connections",
                "Registered connector connections.",
            ),
            pending_handshakes: Gauge::new(
                "mcpt_edge_pending_handshakes",
                "Connector connections not yet authenticated.",
            ),
            handshakes: CounterVec::new(
                "mcpt_edge_connector_handshakes_total",
                "Connector handshakes by result.",
                &["result"],
            ),
            client_requests: CounterVec::new(
                "mcpt_edge_client_requests_total",
                "Client requests by outcome.",
                &["outcome"],
            ),
            active_sessions: Gauge::new(
                "mcpt_edge_active_sessions",
                "Client sessions currently relayed.",
            ),
            bytes: CounterVec::new(
                "mcpt_edge_relayed_bytes_total",
                "Bytes relayed on upgraded sessions.",
                &["direction"],
            ),
            severed: CounterVec::new(
                "mcpt_edge_severed_connections_total",
                "Connector connections closed by the edge.",
                &["reason"],
            ),
        }
    }
}

impl EdgeMetrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.connector_connections.render(&mut out);
        self.pending_handshakes.render(&mut out);
        self.handshakes.render(&mut out);
        self.client_requests.render(&mut out);
        self.active_sessions.render(&mut out);
        self.bytes.render(&mut out);
        self.severed.render(&mut out);
        out
    }
}
