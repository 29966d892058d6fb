//! The shared harness lives in `mcp_tunnel_testutil`; this re-exports it for the tests.
#![allow(unused_imports, dead_code)]

pub use mcp_tunnel_testutil::harness::*;
pub use mcp_tunnel_testutil::stack;
