//! The whole behaviour suite on SQLite (a fresh database file per test).

mod common;
mod suite;

use common::Backend;

suite_tests!(Backend::Sqlite, || false);
