//! `ringchat`: the chat server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringchat_gateway::config::Config;
use ringchat_gateway::config::load::{Layers, Loaded};
use ringchat_gateway::logging;

mod backup_cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says otherwise.
/// mimalloc asks for them on its regions (MADV_HUGEPAGE), and then any 2 MiB of a region it has
/// touched at all is resident whole: with THP, 10,000 idle connections measured 1.26–1.84 KiB
/// each from run to run, without it 0.95–1.07 (docs/BENCHMARKS.md). Set before the first
/// thread starts; the few allocations made before `main` keep whatever pages they have.
fn transparent_huge_pages_off() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // The flag belongs to the process (its address space), whatever rustix's doc says.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

#[derive(Parser)]
#[command(
    name = "ringchat",
    version,
    about = "A thread-per-core instant-messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults need no file: TCP on 0.0.0.0:7000, WebSocket and the chat page
    /// on 0.0.0.0:7001, admin on 127.0.0.1:8080,
    /// data in ./ringchat-data).
    Serve {
        /// TOML configuration file; RINGCHAT_<SECTION>__<KEY> variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// `status`: serve only the cluster's status service (gRPC Assign, GET /assign on
        /// gateway.ws_listen): no shards, no store.
        #[arg(long, value_enum, default_value = "node")]
        role: ringchat_gateway::cluster::Role,
    },
    /// Check a configuration file and list every problem in it.
    CheckConfig {
        file: PathBuf,
        /// Check gateway.cores and backend.cores against these cores (e.g. 0-63) instead of
        /// this machine's online ones: for a file written for another host.
        #[arg(long, value_name = "LIST")]
        host_cores: Option<String>,
    },
    /// Check this host for ringchat (cores, NUMA, pinning, NIC interrupts, limits, sysctls,
    /// huge pages, CPU governor, io_uring), or propose a pinning layout for it. Only reads.
    Tune {
        #[command(subcommand)]
        command: TuneCommand,
    },
    /// Manage the admin listener's operators and API keys (works whether or not the server
    /// runs; changes are audited).
    Admin {
        /// TOML configuration file (for storage.data_dir); RINGCHAT_ variables override it.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Write a self-signed certificate and key (PEM) for trying out TLS; browsers will warn.
    GenCert {
        /// Certificate file to write.
        #[arg(long, default_value = "ringchat-cert.pem")]
        cert: PathBuf,
        /// Private key file to write (mode 0600).
        #[arg(long, default_value = "ringchat-key.pem")]
        key: PathBuf,
        /// Names the certificate is valid for (DNS names or IP addresses).
        #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        names: Vec<String>,
    },
    /// Copy every part of one store into another, empty one (resumable: rerun the same
    /// command), then compare both part by part; exit status 3 when they differ.
    /// STORE: embedded:DIR, backup:DIR (a backup, as a source), postgres:URL, scylla:HOSTS.
    Migrate {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        batch: backup_cli::Batch,
    },
    /// Back up the embedded store of a stopped server into a new directory (a running server
    /// writes its own: POST /api/backups, or [backup] interval_s).
    Backup {
        #[arg(long)]
        to: PathBuf,
        /// TOML configuration file (for storage.data_dir).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        batch: backup_cli::Batch,
    },
    /// Restore a backup into an empty data dir (the configuration's storage.data_dir, or
    /// --data-dir) and verify it against the backup's manifest.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        batch: backup_cli::Batch,
    },
    /// Check a backup's files, counts and checksums against its manifest.
    VerifyBackup { dir: PathBuf },
}

#[derive(Subcommand)]
enum TuneCommand {
    /// Each setting with its value, the recommended one and why; exit status 1 when anything
    /// is critical, 2 when the host or the configuration cannot be read.
    Check {
        /// TOML configuration file (pinning, connection limits, ring size); RINGCHAT_
        /// variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print `{"checks": [{"name", "status", "value", "recommended", "why"}]}`.
        #[arg(long)]
        json: bool,
        /// Read /proc and /sys under this directory (a tree recorded from another host).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Shard, backend and interrupt cores for this host: the configuration snippet, the
    /// interrupt affinity commands and systemd's CPUAffinity= line.
    Plan {
        /// TOML configuration file, to show the layout it has today.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read /proc and /sys under this directory (a tree recorded from another host).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add an operator (password from stdin: typed without echo on a terminal, else the
    /// first line).
    AddUser {
        name: String,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Replace the password and role of an existing operator.
        #[arg(long)]
        replace: bool,
    },
    /// Remove an operator: their dashboard sessions end at their next request.
    RemoveUser { name: String },
    /// Create an API key and print it (once: only its hash is stored).
    AddKey {
        name: String,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
    },
    /// Revoke an API key: refused from the server's next request on.
    RevokeKey { name: String },
    /// Create a chat user (password from stdin, as add-user). Opens the store, so only while
    /// the server is stopped; with it running, use POST /api/users or the dashboard.
    AddChatUser {
        name: String,
        /// The user's e-mail address.
        #[arg(long, default_value = "")]
        email: String,
    },
}

/// Who runs the CLI, for the audit log.
fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}

/// Reads a password: without echo from a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(first == again, "the passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl AdminCommand {
    /// As typed after `ringchat`, for messages.
    fn name(&self) -> &'static str {
        match self {
            AdminCommand::AddUser { .. } => "admin add-user",
            AdminCommand::RemoveUser { .. } => "admin remove-user",
            AdminCommand::AddKey { .. } => "admin add-key",
            AdminCommand::RevokeKey { .. } => "admin revoke-key",
            AdminCommand::AddChatUser { .. } => "admin add-chat-user",
        }
    }
}

fn admin_command(config: Option<&Path>, command: AdminCommand) -> anyhow::Result<()> {
    use ringchat_backend::admin::{auth::Role, cli};
    let config = Config::load(config, env_vars())
        .map_err(|problems| anyhow::anyhow!("configuration: {}", problems.join("; ")))?;
    let dir = &config.storage.data_dir;
    // Every admin command writes into the data dir (credentials, their lock, the audit queue,
    // the store).
    ringchat_gateway::data_dir_owner::ensure(dir, command.name())?;
    let actor = cli_actor();
    let role = |r: &str| Role::parse(r).ok_or_else(|| anyhow::anyhow!("unknown role {r}"));
    match command {
        AdminCommand::AddUser {
            name,
            role: r,
            replace,
        } => {
            let password = read_password()?;
            cli::add_user(
                dir,
                &config.accounts,
                &name,
                role(&r)?,
                &password,
                replace,
                &actor,
            )?;
            println!("operator {name} ({r}) saved");
        }
        AdminCommand::RemoveUser { name } => {
            cli::remove_user(dir, &name, &actor)?;
            println!("operator {name} removed");
        }
        AdminCommand::AddKey { name, role: r } => {
            let key = cli::add_key(dir, &name, role(&r)?, &actor)?;
            println!("{key}");
        }
        AdminCommand::RevokeKey { name } => {
            cli::revoke_key(dir, &name, &actor)?;
            println!("API key {name} revoked");
        }
        AdminCommand::AddChatUser { name, email } => {
            let password = read_password()?;
            let id = ringchat_backend::admin::users::cli::add_chat_user(
                &config.backend_settings(),
                &name,
                &password,
                &email,
                &actor,
            )?;
            println!("user {name} created with id {id}");
        }
    }
    Ok(())
}

/// Writes a self-signed pair; the key file is readable by its owner only.
fn gen_cert(cert: &Path, key: &Path, names: Vec<String>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (cert_pem, key_pem) = ringchat_gateway::tls::self_signed(names)?;
    std::fs::write(cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .and_then(|mut f| f.write_all(key_pem.as_bytes()))
        .with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

/// `ringchat tune`: exit status 0, 1 when a check is critical, 2 when nothing could be read.
fn tune_command(command: TuneCommand) -> ExitCode {
    use ringchat_gateway::tune;
    let (config, root) = match &command {
        TuneCommand::Check { config, root, .. } | TuneCommand::Plan { config, root } => {
            (config.as_deref(), root.as_path())
        }
    };
    let host = match tune::Host::read(root) {
        Ok(h) => h,
        Err(err) => {
            eprintln!("ringchat tune: {err}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load_layers_on(config, env_vars(), Some(host.cpus())) {
        Ok((_, loaded, problems)) if problems.is_empty() => loaded.config,
        Ok((_, _, problems)) | Err(problems) => {
            eprintln!(
                "ringchat tune: the configuration has {} problem(s):",
                problems.len()
            );
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    match command {
        TuneCommand::Check { json, .. } => {
            let report = tune::check::run(&host, &config);
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("ringchat tune: {err}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.text());
            }
            if report.critical() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        TuneCommand::Plan { .. } => {
            let plan = tune::plan::plan(&host, &config);
            let today = config.shard_plan_on(&host.cpus());
            let shards = if today.pinned {
                format!("shards on {}", tune::cpus::format(&today.cores))
            } else {
                format!("{} shards, not pinned (the CPU quota)", today.cores.len())
            };
            println!(
                "# Today: {shards}, backend.cores = [{}]\n",
                tune::cpus::format(&config.backend.cores)
            );
            print!("{}", plan.text());
            ExitCode::SUCCESS
        }
    }
}

/// The environment as text; a variable that is not UTF-8 cannot be a ringchat setting.
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn main() -> ExitCode {
    // First: a SIGHUP's default action would end any command, a starting server too.
    if let Err(err) = ringchat_gateway::hangup::catch() {
        let _ = writeln!(std::io::stderr(), "ringchat: catching SIGHUP: {err}");
        return ExitCode::FAILURE;
    }
    transparent_huge_pages_off();
    let cli = Cli::parse();
    // `serve` sets its logging up from its configuration; the other commands log to stderr.
    let _logging = match &cli.command {
        Command::Serve { .. } => None,
        _ => match logging::init_cli() {
            Ok(l) => Some(l),
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "ringchat: {err:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match cli.command {
        Command::Migrate { from, to, batch } => backup_cli::migrate(&from, &to, &batch),
        Command::Backup { to, config, batch } => backup_cli::backup(&to, config.as_deref(), &batch),
        Command::Restore {
            from,
            config,
            data_dir,
            batch,
        } => backup_cli::restore(&from, config.as_deref(), data_dir.as_deref(), &batch),
        Command::VerifyBackup { dir } => backup_cli::verify_backup(&dir),
        Command::Admin { config, command } => match admin_command(config.as_deref(), command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ringchat admin: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::GenCert { cert, key, names } => match gen_cert(&cert, &key, names) {
            Ok(()) => {
                println!(
                    "wrote {} and {}; serve them with RINGCHAT_GATEWAY__TLS__CERT_PATH={} RINGCHAT_GATEWAY__TLS__KEY_PATH={}",
                    cert.display(),
                    key.display(),
                    cert.display(),
                    key.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("ringchat gen-cert: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Tune { command } => tune_command(command),
        Command::CheckConfig { file, host_cores } => {
            let host_cores = match host_cores.map(|l| ringchat_gateway::tune::cpus::parse(&l)) {
                None => None,
                Some(Ok(cores)) => Some(cores),
                Some(Err(err)) => {
                    eprintln!("ringchat check-config: --host-cores: {err}");
                    return ExitCode::FAILURE;
                }
            };
            check_config(
                &file,
                host_cores.map(ringchat_gateway::config::HostCpus::of),
            )
        }
        Command::Serve { config, role } => {
            let (layers, loaded) =
                match files_checked(Config::load_layers(config.as_deref(), env_vars())) {
                    Ok(c) => c,
                    Err(problems) => {
                        eprintln!("configuration has {} problem(s):", problems.len());
                        for p in problems {
                            eprintln!("  {p}");
                        }
                        return ExitCode::FAILURE;
                    }
                };
            // Written out (files, console) when dropped, after the server's last line.
            let logging =
                match logging::init_serve(&loaded.config.log, &loaded.config.storage.data_dir) {
                    Ok(l) => l,
                    Err(err) => {
                        let _ = writeln!(std::io::stderr(), "ringchat: {err:#}");
                        return ExitCode::FAILURE;
                    }
                };
            ringchat_gateway::panic_policy::install();
            // One descriptor per connection: take the whole hard limit the operator allows.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(n) => tracing::info!(open_files_max = n, "file descriptor limit"),
                Err(err) => tracing::warn!(%err, "could not raise the file descriptor limit"),
            }
            let served = match role {
                ringchat_gateway::cluster::Role::Status => {
                    ringchat_gateway::cluster::run_status(&loaded.config)
                }
                ringchat_gateway::cluster::Role::Node => {
                    ringchat_gateway::server::run(layers, loaded, logging.logs.clone())
                }
            };
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    // Not eprintln!: it panics when stderr cannot be written (a full disk).
                    let _ = writeln!(std::io::stderr(), "ringchat: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A loaded configuration whose TLS files load too: what `serve` needs before anything opens,
/// and what `check-config` promises. The files are checked whenever the file parses, so that
/// their problems are listed with the others, all at once.
fn files_checked(
    loaded: Result<(Layers, Loaded, Vec<String>), Vec<String>>,
) -> Result<(Layers, Loaded), Vec<String>> {
    let (layers, loaded, mut problems) = loaded?;
    problems.extend(loaded.config.file_problems());
    if problems.is_empty() {
        Ok((layers, loaded))
    } else {
        Err(problems)
    }
}

fn check_config(file: &Path, host: Option<ringchat_gateway::config::HostCpus>) -> ExitCode {
    match files_checked(Config::load_layers_on(Some(file), env_vars(), host)) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}
