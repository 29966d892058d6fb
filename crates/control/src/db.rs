//! The database: SQLite (one file under a data directory, the embedded default) or
//! PostgreSQL (by URL), behind one `sqlx::AnyPool` and one schema applied by migrations.
//!
//! Every query is written once with `$1` placeholders, which both drivers accept. Types
//! stay within what both map the same way: BIGINT/INTEGER, TEXT, BYTEA/BLOB.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Transaction};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Why the database could not be opened or queried.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (expected postgres://, postgresql:// or sqlite://)")]
    UnsupportedUrl,
    #[error("cannot create data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A connection pool plus what differs between the two databases.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    dialect: Dialect,
    url: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect)
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// `url` with its password (in the user info or a `password=` query parameter)
/// replaced by `***`, for messages and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = url[..scheme_end].to_owned();
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    out
}

pub(crate) type Tx = Transaction<'static, Any>;

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE: &str = "control.db";

impl Db {
    /// Opens `<data_dir>/control.db`, creating the directory (mode 0700) and file.
    pub async fn open_sqlite_dir(data_dir: &Path) -> Result<Self, DbError> {
        create_private_dir(data_dir)?;
        let file = data_dir.join(SQLITE_FILE);
        let db = Self::connect(&format!("sqlite://{}?mode=rwc", file.display())).await?;
        // Sealed tokens and credential hashes: owner only. SQLite gives its -wal and -shm
        // files the database file's mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| DbError::DataDir {
                    path: file.display().to_string(),
                    reason: mcp_tunnel_pki::tls::io_reason(&e),
                },
            )?;
        }
        Ok(db)
    }

    /// Connects by URL (`postgres://…` or `sqlite://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        options = match dialect {
            Dialect::Sqlite => options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; writers wait instead of
                    // failing at once with "database is locked".
                    sqlx::raw_sql(
                        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
                         PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            }),
            Dialect::Postgres => options.max_connections(16),
        };
        let pool = options.connect(url).await?;
        let db = Self {
            pool,
            dialect,
            url: url.to_owned(),
        };
        db.migrate().await?;
        Ok(db)
    }

    /// The pool itself, for maintenance queries and tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL the pool was opened with (it may contain a password: never log it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let files: [(&str, &'static str); 3] = match self.dialect {
            Dialect::Sqlite => [
                ("init", include_str!("../migrations/sqlite/0001_init.sql")),
                ("edges", include_str!("../migrations/sqlite/0002_edges.sql")),
                (
                    "console",
                    include_str!("../migrations/sqlite/0003_console.sql"),
                ),
            ],
            Dialect::Postgres => [
                ("init", include_str!("../migrations/postgres/0001_init.sql")),
                (
                    "edges",
                    include_str!("../migrations/postgres/0002_edges.sql"),
                ),
                (
                    "console",
                    include_str!("../migrations/postgres/0003_console.sql"),
                ),
            ],
        };
        let migrations = files
            .into_iter()
            .zip(1..)
            .map(|((name, sql), version)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// A write transaction that serialises with every other writer of the organization:
    /// `BEGIN IMMEDIATE` on SQLite, a row lock on the organization on PostgreSQL. Limits
    /// (tunnels per organization, certificates per tunnel) and the audit chain rely on it.
    pub(crate) async fn write_tx(&self, org_id: &str) -> Result<Tx, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
                    .bind(org_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates a directory readable only by its owner.
pub fn create_private_dir(dir: &Path) -> Result<(), DbError> {
    let err = |e: std::io::Error| DbError::DataDir {
        path: dir.display().to_string(),
        reason: mcp_tunnel_pki::tls::io_reason(&e),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        for (url, want) in [
            (
                "postgres://mcpt:s3cr%40t@db.example:5432/mcpt?sslmode=require",
                "postgres://mcpt:***@db.example:5432/mcpt?sslmode=require",
            ),
            (
                "postgresql://u:p:q@h/db?password=hunter2&application_name=x",
                "postgresql://u:***@h/db?password=***&application_name=x",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?PASSWORD=x#frag",
                "postgres://h/db?PASSWORD=***#frag",
            ),
            (
                "sqlite:///data/control.db?mode=rwc",
                "sqlite:///data/control.db?mode=rwc",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn any_url_loses_its_password() {
        // Whatever surrounds it, a password in the user info never survives.
        for prefix in ["postgres://", "postgresql://"] {
            for host in ["h", "h:5432", "[::1]:5432", "a@b"] {
                for tail in ["", "/db", "/db?x=1", "?password=zz9", "#f"] {
                    let url = format!("{prefix}user:zz9@{host}{tail}");
                    let red = redact_url(&url);
                    assert!(!red.contains("zz9"), "{url} -> {red}");
                }
            }
        }
    }

    #[tokio::test]
    async fn connection_errors_do_not_carry_the_password() {
        // Nothing listens on port 1: the error is about the connection, and neither it
        // nor the Debug form of anything holding the URL names the password.
        let url = "postgres://mcpt:pw-zz9-secret@127.0.0.1:1/mcpt?connect_timeout=2";
        let err = Db::connect(url).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("pw-zz9-secret"), "{text}");
        }
        let bad = "postgres://mcpt:pw-zz9-secret@127.0.0.1:notaport/mcpt";
        let err = Db::connect(bad).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("pw-zz9-secret"), "{text}");
        }
    }

    #[tokio::test]
    async fn debug_of_an_open_database_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_dir(dir.path()).await.unwrap();
        let with_password = Db {
            url: "postgres://mcpt:pw-zz9-secret@127.0.0.1/mcpt".into(),
            ..db.clone()
        };
        let shown = format!("{with_password:?}");
        assert!(!shown.contains("pw-zz9-secret"), "{shown}");
        assert!(shown.contains("mcpt:***@127.0.0.1"), "{shown}");
        db.close().await;
    }
}
