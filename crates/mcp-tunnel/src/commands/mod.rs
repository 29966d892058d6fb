//! One module per subcommand.

pub mod call;
pub mod connector;
pub mod edge;
pub mod proxy;
