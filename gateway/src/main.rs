//! `ringchat`: the chat server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringchat_gateway::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the server (defaults need no file: TCP on 0.0.0.0:7000, admin on 127.0.0.1:8080,
    /// data in ./ringchat-data).
    Serve {
        /// TOML configuration file; RINGCHAT_<SECTION>__<KEY> variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and list every problem in it.
    CheckConfig { file: PathBuf },
}

/// The environment as text; a variable that is not UTF-8 cannot be a ringchat setting.
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGCHAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file), env_vars()) {
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
        },
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref(), env_vars()) {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("configuration has {} problem(s):", problems.len());
                    for p in problems {
                        eprintln!("  {p}");
                    }
                    return ExitCode::FAILURE;
                }
            };
            match ringchat_gateway::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("ringchat: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
