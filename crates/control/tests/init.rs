//! Starting the control plane from a data directory: the PostgreSQL URL can come from a
//! file, and its password is never shown.

use std::path::Path;

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

#[test]
fn database_url_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("db-url");
    let url = "postgres://mcpt:pw-zz9@db:5432/mcpt";
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let from = launch::database_url_from;
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
