//! `ringchat migrate`, `backup`, `restore` and `verify-backup`: arguments in, progress and
//! verification out; the work is `ringchat_backend::backup::commands`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use ringchat_backend::backup::commands::{self, Outcome};
use ringchat_backend::backup::copy::Progress;
use ringchat_backend::backup::spec::StoreSpec;
use ringchat_backend::backup::{BATCH_RECORDS_DEFAULT, BATCH_RECORDS_MAX, BackupError};
use ringchat_backend::files::FileStorageKind;
use ringchat_gateway::config::Config;
use ringchat_gateway::data_dir_owner;

/// Exit status when the copy finished but source and destination differ.
const EXIT_MISMATCH: u8 = 3;

#[derive(Args)]
pub struct Batch {
    /// Records per batch read and imported (one commit each).
    #[arg(long, default_value_t = BATCH_RECORDS_DEFAULT)]
    batch_records: usize,
}

impl Batch {
    fn get(&self) -> anyhow::Result<usize> {
        anyhow::ensure!(
            (1..=BATCH_RECORDS_MAX).contains(&self.batch_records),
            "--batch-records must be between 1 and {BATCH_RECORDS_MAX}"
        );
        Ok(self.batch_records)
    }
}

fn print_progress(p: &Progress) {
    eprintln!("{p}");
}

fn print_outcome(what: &str, o: &Outcome) {
    for c in &o.comparisons {
        println!("  {c}");
    }
    let secs = o.copy.elapsed.as_secs_f64();
    println!(
        "{what}: {} records in {secs:.1} s ({:.0} records/s){}; verification passed",
        o.copy.records,
        o.copy.records as f64 / secs.max(1e-3),
        if o.copy.resumed { " (resumed)" } else { "" }
    );
}

/// Ends a command: a verification mismatch gets its own exit status.
fn finish(command: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringchat {command}: {err:#}");
            match err.downcast_ref::<BackupError>() {
                Some(BackupError::Mismatch(_)) => ExitCode::from(EXIT_MISMATCH),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn load(config: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(config, super::env_vars())
        .map_err(|problems| anyhow::anyhow!("configuration: {}", problems.join("; ")))
}

/// Local file storage's directory for a store in `data_dir`; `None` when files are off or on
/// S3 (the bucket is not part of a backup: its versioning and replication are).
fn files_root(config: &Config, data_dir: &Path) -> Option<PathBuf> {
    let files = &config.files;
    (files.enabled && files.storage == FileStorageKind::Local).then(|| files.local_dir(data_dir))
}

pub fn migrate(from: &str, to: &str, batch: &Batch) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let from: StoreSpec = from.parse()?;
        let to: StoreSpec = to.parse()?;
        // An embedded store is opened (and the target's checkpoint written) in its dir.
        for spec in [&from, &to] {
            if let StoreSpec::Embedded(dir) = spec {
                data_dir_owner::ensure(dir, "migrate")?;
            }
        }
        eprintln!(
            "migrating {from} -> {to} (checkpoint: {})",
            to.checkpoint_path()?.display()
        );
        let outcome = commands::migrate(&from, &to, batch.get()?, &mut print_progress)?;
        print_outcome("migrated", &outcome);
        Ok(())
    };
    finish("migrate", run())
}

pub fn backup(to: &Path, config: Option<&Path>, batch: &Batch) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let config = load(config)?;
        let dir = config.storage.data_dir.clone();
        // Opening the store writes into its dir (its journal, recovery).
        data_dir_owner::ensure(&dir, "backup")?;
        let files = files_root(&config, &dir);
        let manifest = commands::backup_stopped(&dir, to, files.as_deref(), batch.get()?)?;
        for p in &manifest.parts {
            println!("  {:<18} {:>12} records", p.part.name(), p.records);
        }
        println!(
            "backup of {} written to {}: {} records",
            dir.display(),
            to.display(),
            manifest.records()
        );
        match (&manifest.files, files) {
            (Some(f), _) => println!("  files: {} ({} bytes)", f.objects, f.bytes),
            (None, None) if config.files.enabled => println!(
                "  files: on S3, not copied (the bucket's versioning and replication are their backup)"
            ),
            _ => {}
        }
        if let Some(s) = &manifest.state {
            println!(
                "  state: {} files ({} bytes): live configuration changes, operators and API keys, activity",
                s.files.len(),
                s.bytes()
            );
        }
        Ok(())
    };
    finish("backup", run())
}

pub fn restore(from: &Path, config: Option<&Path>, into: Option<&Path>, batch: &Batch) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let config = load(config)?;
        let dir = match into {
            Some(d) => d.to_owned(),
            None => config.storage.data_dir.clone(),
        };
        data_dir_owner::ensure(&dir, "restore")?;
        let files = files_root(&config, &dir);
        eprintln!("restoring {} into {}", from.display(), dir.display());
        let (manifest, outcome) = commands::restore(
            from,
            &dir,
            files.as_deref(),
            batch.get()?,
            &mut print_progress,
        )?;
        match (&outcome.files, &manifest.files) {
            (Some(f), _) => println!(
                "  files: {} ({} bytes) into {}",
                f.objects,
                f.bytes,
                files.as_deref().unwrap_or(dir.as_path()).display()
            ),
            (None, Some(_)) => println!(
                "  files: in the backup but not restored (files are off or on S3 in this configuration)"
            ),
            (None, None) => {}
        }
        if let Some(s) = &outcome.state {
            println!(
                "  state: {} files ({} bytes) into {}",
                s.files.len(),
                s.bytes(),
                dir.display()
            );
        }
        print_outcome(
            &format!(
                "restored the backup of {} ({})",
                manifest.source, manifest.created
            ),
            &outcome,
        );
        Ok(())
    };
    finish("restore", run())
}

pub fn verify_backup(dir: &Path) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let check = commands::verify_backup(dir)?;
        for c in check.comparisons {
            println!("  {c}");
        }
        if let Some(f) = check.files {
            println!(
                "  {:<18} {:>12} files    {} bytes  ok",
                "files", f.objects, f.bytes
            );
        }
        if let Some(s) = check.state {
            println!(
                "  {:<18} {:>12} files    {} bytes  ok",
                "state",
                s.files.len(),
                s.bytes()
            );
        }
        println!("{}: the backup matches its manifest", dir.display());
        Ok(())
    };
    finish("verify-backup", run())
}
