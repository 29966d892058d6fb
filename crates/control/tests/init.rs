//! `server init` is all or nothing: a re-run, a crash part-way, a failure part-way or a
//! concurrent init never leaves a half-initialised data directory or overwrites a
//! secret. And the PostgreSQL URL can come from a file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use mcp_tunnel_control::launch::{self, InitOptions, LaunchError};

fn options(dir: &Path) -> InitOptions {
    InitOptions {
        data_dir: dir.to_owned(),
        database_url: None,
        org_name: "test".into(),
        base_domain: "tunnels.test".into(),
        edge_address: "edge.tunnels.test:7844".into(),
        api_hosts: vec![],
        max_tunnels_per_org: 10,
    }
}

/// Every entry of `dir`, sorted, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = if p.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn init_is_complete_and_a_rerun_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let report = launch::init(&options(&dir)).await.unwrap();
    // Exactly the documented files, and no staging or lock left behind.
    assert_eq!(
        names(&dir),
        [
            "api.key",
            "api.pem",
            "config.json",
            "control.db",
            "edge-ca.key",
            "edge-ca.pem",
            "edge.key",
            "edge.pem",
            "master.key"
        ]
    );
    assert_eq!(mode(&dir), 0o700);
    for secret in [
        "master.key",
        "edge-ca.key",
        "edge.key",
        "api.key",
        "control.db",
    ] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    assert_eq!(report.files.len(), 8);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.starts_with(&dir) && f.exists())
    );
    // The store opens from what was written, and knows the admin key.
    let (store, config) = launch::open_store(&dir, None, None).await.unwrap();
    assert_eq!(config.organization_id, report.config.organization_id);
    let admin = store
        .resolve_credential(report.admin_key.expose())
        .await
        .unwrap();
    assert_eq!(admin.map(|c| c.id), Some(report.admin_key_id.clone()));
    store.db().close().await;

    let before = snapshot(&dir);
    let again = launch::init(&options(&dir)).await.unwrap_err();
    assert!(
        matches!(again, LaunchError::AlreadyInitialised { .. }),
        "{again}"
    );
    assert!(again.to_string().contains("already initialised"), "{again}");
    assert_eq!(
        snapshot(&dir),
        before,
        "a refused init changed the directory"
    );
}

#[tokio::test]
async fn a_failure_part_way_leaves_nothing_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // The database is unreachable: init fails after generating keys and certificates.
    let mut o = options(&dir);
    o.database_url = Some("postgres://u:pw@127.0.0.1:1/db?connect_timeout=2".into());
    let err = launch::init(&o).await.unwrap_err();
    assert!(matches!(err, LaunchError::Db(_)), "{err}");
    for name in ["master.key", "config.json", "edge-ca.key", "api.key"] {
        assert!(
            !dir.join(name).exists(),
            "{name} left behind by a failed init"
        );
    }
    // The next attempt starts clean and succeeds.
    launch::init(&options(&dir)).await.unwrap();
    assert!(dir.join("config.json").exists());
    assert!(!dir.join(".init-staging").exists());
}

#[tokio::test]
async fn leftovers_of_a_crashed_init_are_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A crash before the move into place leaves only the staging directory.
    let staging = dir.join(".init-staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("master.key"), "stale\n").unwrap();
    std::fs::write(staging.join("control.db"), "stale").unwrap();
    launch::init(&options(&dir)).await.unwrap();
    assert!(!staging.exists());
    assert_ne!(
        std::fs::read_to_string(dir.join("master.key")).unwrap(),
        "stale\n"
    );
    launch::open_store(&dir, None, None)
        .await
        .unwrap()
        .0
        .db()
        .close()
        .await;
}

#[tokio::test]
async fn a_partial_directory_is_refused_unchanged() {
    for present in [
        &["master.key"][..],
        &["edge.key", "control.db"],
        &["control.db"],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        for name in present {
            std::fs::write(dir.join(name), "precious").unwrap();
        }
        let before = snapshot(&dir);
        let err = launch::init(&options(&dir)).await.unwrap_err();
        assert!(
            matches!(err, LaunchError::PartiallyInitialised { .. }),
            "{err}"
        );
        let msg = err.to_string();
        for name in present {
            assert!(msg.contains(name), "{msg}");
        }
        assert!(
            msg.contains("no config.json") && msg.contains("Nothing was changed"),
            "{msg}"
        );
        assert_eq!(snapshot(&dir), before, "{present:?}");
    }
}

#[tokio::test]
async fn a_concurrent_init_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // Another init holds the lock.
    let held = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".init.lock"))
        .unwrap();
    held.lock().unwrap();
    let err = launch::init(&options(&dir)).await.unwrap_err();
    assert!(matches!(err, LaunchError::InitBusy { .. }), "{err}");
    assert!(err.to_string().contains("another `server init`"), "{err}");
    assert!(!dir.join("master.key").exists());
    drop(held);
    launch::init(&options(&dir)).await.unwrap();
    assert!(!dir.join(".init.lock").exists());
}

#[test]
fn database_url_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("db-url");
    let url = "postgres://mcpt:pw-zz9@db:5432/mcpt";
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let from = launch::database_url;
    assert_eq!(from(None, Some(&file)).unwrap().as_deref(), Some(url));
    assert_eq!(from(Some(url), None).unwrap().as_deref(), Some(url));
    assert_eq!(from(None, None).unwrap(), None);
    assert_eq!(from(Some(""), None).unwrap(), None);
    let twice = from(Some(url), Some(&file)).unwrap_err();
    assert!(matches!(twice, LaunchError::DatabaseUrlTwice), "{twice}");
    let missing = from(None, Some(&tmp.path().join("nope"))).unwrap_err();
    assert!(
        missing.to_string().contains("MCP_TUNNEL_DATABASE_URL_FILE"),
        "{missing}"
    );
    std::fs::write(&file, " \n").unwrap();
    assert!(
        from(None, Some(&file))
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
    std::fs::write(&file, format!("{url}\n{url}\n")).unwrap();
    let two_lines = from(None, Some(&file)).unwrap_err().to_string();
    assert!(
        two_lines.contains("one line") && !two_lines.contains("pw-zz9"),
        "{two_lines}"
    );
}

#[test]
fn init_options_never_show_the_password() {
    let mut o = options(Path::new("/data"));
    o.database_url = Some("postgres://mcpt:pw-zz9@db/mcpt".into());
    let shown = format!("{o:?}");
    assert!(
        !shown.contains("pw-zz9") && shown.contains("mcpt:***@db"),
        "{shown}"
    );
}

/// On PostgreSQL the data directory gets no SQLite file, and a stray one is no reason
/// to refuse.
#[tokio::test]
async fn init_on_postgres() {
    let Some(url) = std::env::var("MCP_TUNNEL_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("MCP_TUNNEL_TEST_DATABASE_URL is not set: skipping");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut o = options(&dir);
    o.database_url = Some(url.clone());
    launch::init(&o).await.unwrap();
    assert!(!dir.join("control.db").exists());
    let (store, config) = launch::open_store(&dir, Some(&url), None).await.unwrap();
    assert!(!config.organization_id.is_empty());
    store.db().close().await;
}
