//! One module per subcommand.

pub mod admin;
pub mod api;
pub mod call;
pub mod certs;
pub mod connect;
pub mod connector;
pub mod doctor;
pub mod edge;
pub mod healthcheck;
pub mod incident;
pub mod monitor;
pub mod proxy;
pub mod quickstart;
pub mod rotate;
pub mod server;
pub mod setup;
pub mod teardown;
pub mod tunnels;
