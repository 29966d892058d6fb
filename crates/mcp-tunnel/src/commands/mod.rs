//! One module per subcommand.

pub mod proxy;
