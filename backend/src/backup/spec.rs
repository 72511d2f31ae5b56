//! What `--from` and `--to` name: `embedded:DIR` (a data dir), `backup:DIR` (a backup, as a
//! source only), `postgres:URL` (a database, its schema made or brought up to date at open;
//! `postgres:` alone takes the URL from the environment and `postgres:file:PATH` from a file,
//! so that no password sits on the command line) and
//! `scylla:HOST:PORT[,HOST:PORT…][/KEYSPACE]` (a cluster's keyspace, `ringchat` by default;
//! the rest of `[storage.scylla]` from the environment: `scylla_env.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use super::BackupError;
use super::archive::Archive;
use crate::config::{Durability, PostgresConfig};
use crate::live::credentials_hidden;
use crate::store::dump::{DumpStore, DumpView};
use crate::store::{FjallStore, PgStore, ScyllaStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Backup(PathBuf),
    Postgres(PgUrl),
    Scylla {
        hosts: Vec<String>,
        keyspace: String,
    },
}

/// A PostgreSQL connection string (URL or `key=value` form), checked. Shown (`Display`,
/// `Debug`) as its hosts, ports and database only: never its password, whatever form or
/// parameter carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
    shown: String,
}

impl PgUrl {
    pub fn new(url: String) -> Result<Self, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| credentials_hidden(&format!("not a PostgreSQL URL: {e}")))?;
        let ports = config.get_ports();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                };
                // One port for all hosts, one per host, or none (the default).
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{host}:{port}")
            })
            .collect();
        // The database defaults to the user's name, as libpq does.
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default();
        let shown = format!("{}/{db}", hosts.join(","));
        Ok(Self { url, shown })
    }

    /// The connection string itself (with its password): only to connect.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

const FORMS: &str = "embedded:DIR, backup:DIR, postgres:URL, postgres: (the URL from RINGCHAT_STORAGE__POSTGRES__URL or __URL_FILE), postgres:file:PATH or scylla:HOST:PORT[,HOST:PORT...][/KEYSPACE]";

/// The environment variables `postgres:` alone reads, as a server reads them.
const PG_URL_ENV: &str = "RINGCHAT_STORAGE__POSTGRES__URL";
const PG_URL_FILE_ENV: &str = "RINGCHAT_STORAGE__POSTGRES__URL_FILE";

impl std::str::FromStr for StoreSpec {
    type Err = BackupError;

    fn from_str(s: &str) -> Result<Self, BackupError> {
        Self::parse_with(s, &|name| std::env::var(name).ok())
    }
}

impl StoreSpec {
    /// Parses a spec; `env` reads an environment variable (`postgres:` alone).
    pub fn parse_with(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, BackupError> {
        let bad = |why: &str| {
            BackupError::Spec(format!(
                "store {:?}: {why} (expected {FORMS})",
                credentials_hidden(s)
            ))
        };
        let postgres = |url: Result<String, String>| {
            url.and_then(PgUrl::new)
                .map(Self::Postgres)
                .map_err(|why| bad(&why))
        };
        // A bare URL is accepted as it is written elsewhere.
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return postgres(Ok(s.to_owned()));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no kind"))?;
        if matches!(kind, "postgres" | "postgresql") {
            return postgres(postgres_url(rest, env));
        }
        if rest.is_empty() {
            return Err(bad("nothing after the kind"));
        }
        match kind {
            "embedded" => Ok(Self::Embedded(PathBuf::from(rest))),
            "backup" => Ok(Self::Backup(PathBuf::from(rest))),
            "scylla" => {
                let (hosts, keyspace) =
                    super::scylla_env::split_hosts(rest).map_err(|w| bad(&w))?;
                Ok(Self::Scylla { hosts, keyspace })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

/// The URL of `postgres:REST`: REST itself, the file `file:PATH` names, or (REST empty) the
/// server's variables, `url` or `url_file`, by the server's rule (`resolved_url`).
fn postgres_url(rest: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (url, url_file) = if rest.is_empty() {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        match (var(PG_URL_ENV), var(PG_URL_FILE_ENV)) {
            (None, None) => {
                return Err(format!(
                    "postgres: alone takes the URL from {PG_URL_ENV} or {PG_URL_FILE_ENV}, and neither is set"
                ));
            }
            (url, file) => (url.unwrap_or_default(), file.unwrap_or_default()),
        }
    } else if let Some(path) = rest.strip_prefix("file:") {
        (String::new(), path.to_owned())
    } else {
        return Ok(rest.to_owned());
    };
    PostgresConfig {
        url,
        url_file: url_file.into(),
        ..PostgresConfig::default()
    }
    .resolved_url()
}

impl std::fmt::Display for StoreSpec {
    /// Without credentials: what a checkpoint, a manifest and a log line may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(dir) => write!(f, "embedded:{}", absolute(dir).display()),
            Self::Backup(dir) => write!(f, "backup:{}", absolute(dir).display()),
            Self::Postgres(url) => write!(f, "postgres:{url}"),
            Self::Scylla { hosts, keyspace } => {
                write!(f, "scylla:{}/{keyspace}", hosts.join(","))
            }
        }
    }
}

fn absolute(dir: &std::path::Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

/// A store opened for a copy.
pub enum Opened {
    Embedded(Arc<FjallStore>),
    Backup(Archive),
    Postgres(Box<PgStore>),
    Scylla(Box<ScyllaStore>),
}

impl StoreSpec {
    /// Opens the store. An embedded one takes its data dir's lock: a running server's data
    /// dir is refused (back it up with the server's API, then copy from `backup:DIR`).
    pub fn open(&self) -> Result<Opened, BackupError> {
        match self {
            Self::Embedded(dir) => match FjallStore::open(dir, Durability::Fsync) {
                Ok(store) => Ok(Opened::Embedded(Arc::new(store))),
                Err(StoreError::DirInUse(dir)) => Err(BackupError::Spec(format!(
                    "{} is in use by a running ringchat: stop it, or take a backup from it (POST /api/backups, or [backup] in its config) and copy from backup:DIR",
                    dir.display()
                ))),
                Err(e) => Err(BackupError::Spec(format!("{}: {e}", dir.display()))),
            },
            Self::Backup(dir) => {
                let archive = Archive::open(dir)?;
                archive.check_files()?;
                Ok(Opened::Backup(archive))
            }
            Self::Postgres(url) => {
                let config = PostgresConfig {
                    url: url.url().to_owned(),
                    ..PostgresConfig::default()
                };
                PgStore::open_for_import(&config, Durability::Fsync)
                    .map(|store| Opened::Postgres(Box::new(store)))
                    .map_err(|e| BackupError::Spec(format!("{self}: {e}")))
            }
            Self::Scylla { hosts, keyspace } => {
                let env = |name: &str| std::env::var(name).ok();
                let config = super::scylla_env::config(hosts, keyspace, &env)
                    .map_err(|why| BackupError::Spec(format!("{self}: {why}")))?;
                ScyllaStore::open(&config)
                    .map(|store| Opened::Scylla(Box::new(store)))
                    .map_err(|e| BackupError::Spec(format!("{self}: {e}")))
            }
        }
    }

    /// Where a copy into this store keeps its checkpoint.
    pub fn checkpoint_path(&self) -> Result<PathBuf, BackupError> {
        match self {
            Self::Embedded(dir) => Ok(dir.join(super::copy::CHECKPOINT_FILE)),
            Self::Backup(_) => Err(BackupError::Spec(
                "backup:DIR is a source only: `ringchat backup` writes backups".into(),
            )),
            // In the working directory, named after the database: a rerun from there
            // continues the copy.
            Self::Postgres(_) | Self::Scylla { .. } => {
                let name: String = self
                    .to_string()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                Ok(PathBuf::from(format!(
                    "ringchat-copy-checkpoint-{name}.json"
                )))
            }
        }
    }
}

impl Opened {
    pub fn view(&self) -> Result<Box<dyn DumpView + '_>, BackupError> {
        match self {
            Opened::Embedded(store) => Ok(store.dump_view()?),
            Opened::Backup(archive) => Ok(Box::new(ArchiveRef(archive))),
            Opened::Postgres(store) => Ok(store.dump_view()?),
            Opened::Scylla(store) => Ok(store.dump_view()?),
        }
    }

    pub fn store(&self) -> Result<&dyn DumpStore, BackupError> {
        match self {
            Opened::Embedded(store) => Ok(store.as_ref()),
            Opened::Backup(_) => Err(BackupError::Spec(
                "backup:DIR is a source only: restore it into embedded:DIR or postgres:URL".into(),
            )),
            Opened::Postgres(store) => Ok(store.as_ref()),
            Opened::Scylla(store) => Ok(store.as_ref()),
        }
    }
}

/// An [`Archive`] borrowed as a view.
struct ArchiveRef<'a>(&'a Archive);

impl DumpView for ArchiveRef<'_> {
    fn export(
        &self,
        part: crate::store::dump::Part,
        after: Option<&crate::store::dump::ResumeKey>,
        records_max: usize,
    ) -> Result<crate::store::dump::DumpPage, StoreError> {
        self.0.export(part, after, records_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `postgres:` alone reads the server's variables; `postgres:file:PATH` a file: no
    /// password on the command line.
    #[test]
    fn a_postgres_url_comes_from_the_environment_or_a_file() {
        let url = "postgres://u:secret@h:5432/db";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, format!("{url}\n")).unwrap();
        let file_text = file.display().to_string();
        let with = |vars: &[(&'static str, String)], spec: &str| {
            let vars = vars.to_vec();
            StoreSpec::parse_with(spec, &move |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        let expect = |spec: Result<StoreSpec, BackupError>| match spec.unwrap() {
            StoreSpec::Postgres(pg) => assert_eq!(pg.url(), url),
            other => panic!("{other:?}"),
        };
        expect(with(&[(PG_URL_ENV, url.to_owned())], "postgres:"));
        expect(with(&[(PG_URL_FILE_ENV, file_text.clone())], "postgresql:"));
        expect(with(&[], &format!("postgres:file:{file_text}")));
        let both = with(
            &[(PG_URL_ENV, url.to_owned()), (PG_URL_FILE_ENV, file_text)],
            "postgres:",
        );
        assert!(both.unwrap_err().to_string().contains("not both"));
        let none = with(&[], "postgres:").unwrap_err().to_string();
        assert!(none.contains(PG_URL_ENV), "{none}");
        let missing = with(&[], "postgres:file:/no/such/file")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/no/such/file"), "{missing}");
    }

    #[test]
    fn parses_every_kind_and_refuses_the_rest() {
        let p = |s: &str| s.parse::<StoreSpec>();
        assert_eq!(
            p("embedded:/var/lib/x").unwrap(),
            StoreSpec::Embedded("/var/lib/x".into())
        );
        assert_eq!(p("backup:b").unwrap(), StoreSpec::Backup("b".into()));
        assert!(matches!(
            p("postgres://u:pw@h/db").unwrap(),
            StoreSpec::Postgres(_)
        ));
        assert_eq!(
            p("scylla:a:9042,b:9042/chat_eu").unwrap(),
            StoreSpec::Scylla {
                hosts: vec!["a:9042".into(), "b:9042".into()],
                keyspace: "chat_eu".into()
            }
        );
        let default_keyspace = p("scylla:a:9042").unwrap();
        assert_eq!(default_keyspace.to_string(), "scylla:a:9042/ringchat");
        assert!(
            default_keyspace
                .checkpoint_path()
                .unwrap()
                .to_string_lossy()
                .contains("scylla_a_9042_ringchat")
        );
        for bad in [
            "",
            "embedded:",
            "mysql:x",
            "/just/a/path",
            "scylla:a:9042/",
            "scylla:/ks",
            "scylla:a:9042,,b:9042/ks",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        // Every form of a password: shown nowhere (the "migrating" line, the checkpoint's
        // name and `source`, the destination's import mark, errors).
        for (spec, shown) in [
            (
                "postgres:postgres://u:secret@h:5432/db",
                "postgres:h:5432/db",
            ),
            ("postgres://u:secret@h/db", "postgres:h:5432/db"),
            (
                "postgres:host=db port=5433 user=r password=secret dbname=r",
                "postgres:db:5433/r",
            ),
            (
                "postgres:postgresql://db/r?password=secret&sslmode=disable",
                "postgres:db:5432/r",
            ),
            (
                "postgres:host=a,b user=r password='se cret'",
                "postgres:a:5432,b:5432/r",
            ),
        ] {
            let pg = p(spec).unwrap();
            assert_eq!(pg.to_string(), shown, "{spec}");
            assert!(!format!("{pg:?}").contains("secret"), "{pg:?}");
            let checkpoint = pg.checkpoint_path().unwrap();
            assert!(!checkpoint.to_string_lossy().contains("secret"));
        }
        // The checkpoint is per database, whoever connects: the same name for the same one.
        let checkpoint = |s: &str| p(s).unwrap().checkpoint_path().unwrap();
        assert_eq!(
            checkpoint("postgres://u:secret@h:5432/db"),
            checkpoint("postgres:host=h user=v password=other dbname=db")
        );
        assert_ne!(
            checkpoint("postgres://u@h/db"),
            checkpoint("postgres://u@h/db2")
        );
        // A bad one says why without echoing its password.
        for bad in [
            "postgres:host=db port=x password=secret",
            "postgres://u:secret@h:5432x/db",
            "postgres:",
        ] {
            let err = StoreSpec::parse_with(bad, &|_| None)
                .err()
                .unwrap()
                .to_string();
            assert!(!err.contains("secret"), "{err}");
        }
        // Opening checks the rest of [storage.scylla] before connecting.
        let err = p("scylla:a:notaport/ks")
            .unwrap()
            .open()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("a:notaport"), "{err}");
    }
}
