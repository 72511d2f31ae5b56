//! What `--from` and `--to` name: `embedded:DIR` (a data dir), `backup:DIR` (a backup, as a
//! source only), `postgres:URL` (a database, its schema made or brought up to date at open)
//! and `scylla:HOST:PORT[,HOST:PORT…][/KEYSPACE]` (a cluster's keyspace, `ringchat` by default;
//! the rest of `[storage.scylla]` from the environment: `scylla_env.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use super::BackupError;
use super::archive::Archive;
use crate::config::{Durability, PostgresConfig};
use crate::store::dump::{DumpStore, DumpView};
use crate::store::{FjallStore, PgStore, ScyllaStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Backup(PathBuf),
    Postgres(String),
    Scylla {
        hosts: Vec<String>,
        keyspace: String,
    },
}

const FORMS: &str =
    "embedded:DIR, backup:DIR, postgres:URL or scylla:HOST:PORT[,HOST:PORT...][/KEYSPACE]";

impl std::str::FromStr for StoreSpec {
    type Err = BackupError;

    fn from_str(s: &str) -> Result<Self, BackupError> {
        let bad = |why: &str| BackupError::Spec(format!("store {s:?}: {why} (expected {FORMS})"));
        // A bare URL is accepted as it is written elsewhere.
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no kind"))?;
        if rest.is_empty() {
            return Err(bad("nothing after the kind"));
        }
        match kind {
            "embedded" => Ok(Self::Embedded(PathBuf::from(rest))),
            "backup" => Ok(Self::Backup(PathBuf::from(rest))),
            "postgres" | "postgresql" => Ok(Self::Postgres(rest.to_owned())),
            "scylla" => {
                let (hosts, keyspace) =
                    super::scylla_env::split_hosts(rest).map_err(|w| bad(&w))?;
                Ok(Self::Scylla { hosts, keyspace })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    /// Without credentials: what a checkpoint, a manifest and a log line may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(dir) => write!(f, "embedded:{}", absolute(dir).display()),
            Self::Backup(dir) => write!(f, "backup:{}", absolute(dir).display()),
            Self::Postgres(url) => {
                let host = url.rsplit('@').next().unwrap_or_default();
                write!(f, "postgres:{}", host.trim_start_matches("postgres://"))
            }
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
                    url: url.clone(),
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
        let pg = p("postgres:postgres://u:secret@h:5432/db").unwrap();
        assert!(!pg.to_string().contains("secret"), "{pg}");
        let checkpoint = pg.checkpoint_path().unwrap();
        assert!(!checkpoint.to_string_lossy().contains("secret"));
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
