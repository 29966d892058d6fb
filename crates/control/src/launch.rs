//! Starting the control plane from a data directory: `server init` writes the
//! organization, master key and TLS material there; `api` and `server` read them back.
//!
//! Layout of the data directory (mode 0700; secrets 0600):
//! - `control.db`: the SQLite database (unless a PostgreSQL URL is given)
//! - `master.key`: base64 of the 32-byte key sealing tunnel tokens
//! - `config.json`: organization id, base domain, edge address, edge CA pin (no secrets)
//! - `edge-ca.pem`/`edge-ca.key`: the CA of the edge's certificates
//! - `edge.pem`/`edge.key`: the edge's certificate chain (leaf + CA) and key
//! - `api.pem`/`api.key`: the API's HTTPS certificate chain and key (same CA)

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, KeyKind};
use mcp_tunnel_proto::{CaPin, EdgeAddr};
use serde::{Deserialize, Serialize};

use crate::db::{Db, create_private_dir, redact_url};
use crate::seal::MasterKey;
use crate::store::{ControlStore, DEFAULT_MAX_TUNNELS, StoreSettings};

pub const MASTER_KEY_FILE: &str = "master.key";
pub const CONFIG_FILE: &str = "config.json";
pub const EDGE_CA_CERT: &str = "edge-ca.pem";
pub const EDGE_CA_KEY: &str = "edge-ca.key";
pub const EDGE_CERT: &str = "edge.pem";
pub const EDGE_KEY: &str = "edge.key";
pub const API_CERT: &str = "api.pem";
pub const API_KEY: &str = "api.key";
/// Environment variable that may hold the master key instead of the file.
pub const MASTER_KEY_ENV: &str = "MCP_TUNNEL_MASTER_KEY";
/// Environment variable naming a file that holds the PostgreSQL URL (a mounted secret),
/// so that a URL with a password appears neither in argv nor in the environment.
pub const DATABASE_URL_FILE_ENV: &str = "MCP_TUNNEL_DATABASE_URL_FILE";

/// Where `init` builds the data directory's contents before moving them into place.
const STAGING_DIR: &str = ".init-staging";
/// Held (flock) by the `init` at work on a data directory.
const INIT_LOCK: &str = ".init.lock";
/// What `init` moves into the data directory, in order: `config.json`, last, is what
/// makes a data directory initialised.
const INIT_FILES: [&str; 8] = [
    MASTER_KEY_FILE,
    EDGE_CA_CERT,
    EDGE_CA_KEY,
    EDGE_CERT,
    EDGE_KEY,
    API_CERT,
    API_KEY,
    CONFIG_FILE,
];
/// The SQLite database and the files SQLite keeps beside it.
const SQLITE_FILES: [&str; 3] = [crate::db::SQLITE_FILE, "control.db-wal", "control.db-shm"];

/// Validity of the TLS certificates `init` issues.
const EDGE_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{path} already exists: this data directory is already initialised")]
    AlreadyInitialised { path: String },
    #[error(
        "{dir} holds {found} but no {CONFIG_FILE}: an earlier `server init` stopped part-way \
         or the files are someone else's. Nothing was changed; move them away (or use an empty \
         directory) and run `server init` again"
    )]
    PartiallyInitialised { dir: String, found: String },
    #[error("another `server init` is running on {dir}")]
    InitBusy { dir: String },
    #[error(
        "the database URL is given twice: use either --database-url (MCP_TUNNEL_DATABASE_URL) \
         or --database-url-file ({DATABASE_URL_FILE_ENV})"
    )]
    DatabaseUrlTwice,
    #[error("--database-url-file ({DATABASE_URL_FILE_ENV}) {path}: {reason}")]
    DatabaseUrlFile { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot read {path}: {reason} (run `mcp-tunnel server init` first?)")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    BadConfig { path: String, reason: String },
    #[error("--edge-address {0:?}: {1}")]
    EdgeAddr(String, String),
    #[error("--base-domain {0:?}: must be a lowercase DNS name with at least two labels")]
    BaseDomain(String),
    #[error("cannot generate TLS material: {0}")]
    Generate(#[from] generate::GenError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error(transparent)]
    Store(#[from] crate::store::ControlError),
}

/// What `config.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub organization_id: String,
    pub workspace_id: String,
    pub base_domain: String,
    pub edge_address: String,
    /// Lowercase hex SHA-256 of the edge CA's DER, written into tunnel tokens.
    pub edge_ca_sha256: Option<String>,
    pub max_tunnels_per_org: u32,
}

impl DataConfig {
    /// The host of the edge address (a name the edge certificate carries).
    pub fn edge_host(&self) -> Result<String, LaunchError> {
        EdgeAddr::parse(&self.edge_address)
            .map(|a| a.host().to_owned())
            .map_err(|e| LaunchError::EdgeAddr(self.edge_address.clone(), e.to_string()))
    }
}

/// Options of `server init`.
#[derive(Clone)]
pub struct InitOptions {
    pub data_dir: PathBuf,
    /// May carry a password: never printed (see the `Debug` impl).
    pub database_url: Option<String>,
    pub org_name: String,
    pub base_domain: String,
    pub edge_address: String,
    /// Extra names (DNS or IP) for the API's certificate; `localhost` and 127.0.0.1 are
    /// always included.
    pub api_hosts: Vec<String>,
    pub max_tunnels_per_org: u32,
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("org_name", &self.org_name)
            .field("base_domain", &self.base_domain)
            .field("edge_address", &self.edge_address)
            .field("api_hosts", &self.api_hosts)
            .field("max_tunnels_per_org", &self.max_tunnels_per_org)
            .finish()
    }
}

/// What `init` created; the admin key and password are in no file.
#[derive(Debug)]
pub struct InitReport {
    pub config: DataConfig,
    pub admin_key_id: String,
    pub admin_key: Secret,
    /// The console's bootstrap owner (`admin`) and its password, shown once.
    pub admin_login: String,
    pub admin_password: Secret,
    pub files: Vec<PathBuf>,
}

/// Login of the console's bootstrap owner.
pub const BOOTSTRAP_ADMIN_LOGIN: &str = "admin";

pub(crate) fn write(path: &Path, contents: &str, secret: bool) -> Result<(), LaunchError> {
    use std::io::Write as _;
    let err = |e: std::io::Error| LaunchError::Write {
        path: path.display().to_string(),
        reason: mcp_tunnel_pki::tls::io_reason(&e),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    // On disk before the rename that publishes it.
    f.sync_all().map_err(err)?;
    Ok(())
}

fn valid_base_domain(d: &str) -> bool {
    d.contains('.')
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Creates the data directory's contents and bootstraps the organization.
///
/// All or nothing: everything is built in `<data_dir>/.init-staging` and moved into
/// place at the end, `config.json` last. A data directory with `config.json` is
/// initialised and is refused, unchanged. One with some of init's files but no
/// `config.json` is refused, unchanged, naming them. A staging directory left by an
/// init that died is discarded (none of it was ever used). Two inits on one directory
/// exclude each other with a lock. On PostgreSQL an init that dies after its
/// transaction leaves an organization nobody holds a key for; it is harmless.
pub async fn init(o: &InitOptions) -> Result<InitReport, LaunchError> {
    if !valid_base_domain(&o.base_domain) {
        return Err(LaunchError::BaseDomain(o.base_domain.clone()));
    }
    let edge = EdgeAddr::parse(&o.edge_address)
        .map_err(|e| LaunchError::EdgeAddr(o.edge_address.clone(), e.to_string()))?;
    let database_url = o.database_url.as_deref().filter(|u| !u.is_empty());
    create_private_dir(&o.data_dir)?;
    let _lock = InitLock::acquire(&o.data_dir)?;
    let path = |name: &str| o.data_dir.join(name);
    if path(CONFIG_FILE).exists() {
        return Err(LaunchError::AlreadyInitialised {
            path: path(CONFIG_FILE).display().to_string(),
        });
    }
    let ours = INIT_FILES.iter().chain(if database_url.is_none() {
        SQLITE_FILES.iter()
    } else {
        [].iter()
    });
    let found: Vec<&str> = ours.copied().filter(|n| path(n).exists()).collect();
    if !found.is_empty() {
        return Err(LaunchError::PartiallyInitialised {
            dir: o.data_dir.display().to_string(),
            found: found.join(", "),
        });
    }
    let staging = path(STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| LaunchError::Write {
            path: staging.display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        })?;
    }
    create_private_dir(&staging)?;
    let report = build(o, &edge, database_url, &staging).await?;
    let moved: Vec<&str> = SQLITE_FILES
        .iter()
        .filter(|n| staging.join(n).exists())
        .chain(INIT_FILES.iter())
        .copied()
        .collect();
    for name in moved {
        std::fs::rename(staging.join(name), path(name)).map_err(|e| LaunchError::Write {
            path: path(name).display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        })?;
    }
    sync_dir(&o.data_dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(InitReport {
        files: INIT_FILES.iter().map(|n| path(n)).collect(),
        ..report
    })
}

/// Writes every file of a data directory into `dir` and bootstraps the organization.
async fn build(
    o: &InitOptions,
    edge: &EdgeAddr,
    database_url: Option<&str>,
    dir: &Path,
) -> Result<InitReport, LaunchError> {
    let path = |name: &str| dir.join(name);
    let master = MasterKey::generate();
    write(&path(MASTER_KEY_FILE), &(master.to_base64() + "\n"), true)?;

    let ca = generate::generate_ca("mcp-tunnel edge CA", EDGE_CA_VALIDITY)?;
    let edge_names = vec![edge.host().to_owned(), format!("*.{}", o.base_domain)];
    let edge_cert = generate::issue_server_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        &edge_names,
        LEAF_VALIDITY,
        KeyKind::EcdsaP256,
    )?;
    let mut api_names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    api_names.extend(o.api_hosts.iter().cloned());
    let api_cert = generate::issue_server_cert(
        &ca.cert_pem,
        ca.key_pem.expose(),
        &api_names,
        LEAF_VALIDITY,
        KeyKind::EcdsaP256,
    )?;
    write(&path(EDGE_CA_CERT), &ca.cert_pem, false)?;
    write(&path(EDGE_CA_KEY), ca.key_pem.expose(), true)?;
    write(
        &path(EDGE_CERT),
        &format!("{}{}", edge_cert.cert_pem, ca.cert_pem),
        false,
    )?;
    write(&path(EDGE_KEY), edge_cert.key_pem.expose(), true)?;
    write(
        &path(API_CERT),
        &format!("{}{}", api_cert.cert_pem, ca.cert_pem),
        false,
    )?;
    write(&path(API_KEY), api_cert.key_pem.expose(), true)?;

    let pin = CaPin::from_der(&ca.cert_der);
    let settings = StoreSettings {
        base_domain: o.base_domain.clone(),
        edge_addr: edge.clone(),
        edge_ca_pin: Some(pin),
        max_tunnels_per_org: o.max_tunnels_per_org,
    };
    let db = open_db(dir, database_url).await?;
    let store = ControlStore::new(db, master, settings);
    let made = async {
        let boot = store.bootstrap(&o.org_name).await?;
        let admin = store
            .create_bootstrap_admin(&boot.organization_id, BOOTSTRAP_ADMIN_LOGIN)
            .await?;
        Ok::<_, crate::store::ControlError>((boot, admin))
    }
    .await;
    store.db().close().await;
    let (boot, (admin, admin_password)) = made?;
    let config = DataConfig {
        organization_id: boot.organization_id,
        workspace_id: boot.workspace_id,
        base_domain: o.base_domain.clone(),
        edge_address: edge.to_string(),
        edge_ca_sha256: Some(pin.to_hex()),
        max_tunnels_per_org: o.max_tunnels_per_org,
    };
    let json = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    write(&path(CONFIG_FILE), &json, false)?;
    Ok(InitReport {
        config,
        admin_key_id: boot.admin_key_id,
        admin_key: boot.admin_key,
        admin_login: admin.login,
        admin_password,
        files: Vec::new(),
    })
}

/// Makes the renames into `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LaunchError> {
    let r = std::fs::File::open(dir).and_then(|d| d.sync_all());
    r.map_err(|e| LaunchError::Write {
        path: dir.display().to_string(),
        reason: mcp_tunnel_pki::tls::io_reason(&e),
    })
}

/// An exclusive lock on a data directory for the duration of `init`; released (and
/// its file removed) on drop, and by the kernel if the process dies.
struct InitLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl InitLock {
    fn acquire(dir: &Path) -> Result<Self, LaunchError> {
        let path = dir.join(INIT_LOCK);
        let err = |e: std::io::Error| LaunchError::Write {
            path: path.display().to_string(),
            reason: mcp_tunnel_pki::tls::io_reason(&e),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path).map_err(err)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { path, _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LaunchError::InitBusy {
                dir: dir.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
        }
    }
}

impl Drop for InitLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The PostgreSQL URL: `given` (`--database-url`, `MCP_TUNNEL_DATABASE_URL`), else the
/// one line of `file` (`--database-url-file`, `MCP_TUNNEL_DATABASE_URL_FILE`), else none
/// (SQLite). Both at once is refused.
pub fn database_url(
    given: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, LaunchError> {
    let file = file.filter(|f| !f.as_os_str().is_empty());
    let given = given.filter(|u| !u.is_empty());
    let Some(file) = file else {
        return Ok(given.map(str::to_owned));
    };
    if given.is_some() {
        return Err(LaunchError::DatabaseUrlTwice);
    }
    let bad = |reason: String| LaunchError::DatabaseUrlFile {
        path: file.display().to_string(),
        reason,
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| bad(mcp_tunnel_pki::tls::io_reason(&e)))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    if url.contains(['\n', '\r']) {
        return Err(bad("the file must hold one line, the URL".into()));
    }
    Ok(Some(url.to_owned()))
}

/// Opens PostgreSQL when a URL is given, else `<data_dir>/control.db`.
pub async fn open_db(data_dir: &Path, database_url: Option<&str>) -> Result<Db, LaunchError> {
    Ok(match database_url {
        Some(url) => Db::connect(url).await?,
        None => Db::open_sqlite_dir(data_dir).await?,
    })
}

/// Reads `config.json`.
pub fn read_config(data_dir: &Path) -> Result<DataConfig, LaunchError> {
    let p = data_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| LaunchError::Read {
        path: p.display().to_string(),
        reason: mcp_tunnel_pki::tls::io_reason(&e),
    })?;
    serde_json::from_str(&text).map_err(|e| LaunchError::BadConfig {
        path: p.display().to_string(),
        reason: e.to_string(),
    })
}

/// The master key from `MCP_TUNNEL_MASTER_KEY`, else from `<data_dir>/master.key`.
pub fn read_master_key(data_dir: &Path) -> Result<MasterKey, LaunchError> {
    if let Ok(v) = std::env::var(MASTER_KEY_ENV)
        && !v.is_empty()
    {
        return Ok(MasterKey::from_base64(&v)?);
    }
    Ok(MasterKey::from_file(&data_dir.join(MASTER_KEY_FILE))?)
}

/// Opens the store described by a data directory.
/// `max_tunnels` overrides the limit recorded at init.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
    max_tunnels: Option<u32>,
) -> Result<(ControlStore, DataConfig), LaunchError> {
    let config = read_config(data_dir)?;
    let master = read_master_key(data_dir)?;
    let edge = EdgeAddr::parse(&config.edge_address)
        .map_err(|e| LaunchError::EdgeAddr(config.edge_address.clone(), e.to_string()))?;
    let pin = match &config.edge_ca_sha256 {
        None => None,
        Some(h) => Some(CaPin::parse_hex(h).ok_or_else(|| LaunchError::BadConfig {
            path: data_dir.join(CONFIG_FILE).display().to_string(),
            reason: "edge_ca_sha256 must be 64 lowercase hex digits".into(),
        })?),
    };
    let settings = StoreSettings {
        base_domain: config.base_domain.clone(),
        edge_addr: edge,
        edge_ca_pin: pin,
        max_tunnels_per_org: match (max_tunnels, config.max_tunnels_per_org) {
            (Some(n), _) => n,
            (None, 0) => DEFAULT_MAX_TUNNELS,
            (None, n) => n,
        },
    };
    let database_url = database_url.filter(|u| !u.is_empty());
    let db = open_db(data_dir, database_url).await?;
    Ok((ControlStore::new(db, master, settings), config))
}
