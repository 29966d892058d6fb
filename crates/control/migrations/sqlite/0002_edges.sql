-- Edge replicas sharing this database: where peers reach each one's session listener,
-- and when it last said it was alive. Connections of a replica that stopped
-- heartbeating are reaped by the others.
CREATE TABLE edges (
    edge_id TEXT PRIMARY KEY,
    peer_addr TEXT NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
