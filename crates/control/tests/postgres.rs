//! The whole behaviour suite on the PostgreSQL named by `MCP_TUNNEL_TEST_DATABASE_URL`
//! (each test in its own organization). Without the variable every test returns at once
//! after saying so on stderr.

mod common;
mod suite;

use common::Backend;

fn skip() -> bool {
    if common::pg_url().is_none() {
        eprintln!(
            "{} is not set: skipping the PostgreSQL suite",
            common::PG_ENV
        );
        return true;
    }
    false
}

suite_tests!(Backend::Postgres, skip);
