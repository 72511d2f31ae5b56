//! `ringchat-bench`: the bundled load generator. This first version is a smoke client; the
//! scenarios (`connect`, `pairs`) arrive with the benchmark issue.

use std::time::Instant;

use clap::Parser;
use ringchat_bench::client::Client;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connects, registers (or reuses) a user, logs in and measures ping round trips.
#[derive(Parser)]
#[command(name = "ringchat-bench", version)]
struct Cli {
    /// Server TCP address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    #[arg(long, default_value = "bench_smoke")]
    username: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Ping round trips to measure.
    #[arg(long, default_value_t = 100)]
    pings: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (mut client, login) =
        Client::signup(&cli.addr, &cli.username, &cli.password, "bench").await?;
    println!("logged in as {}", login.user_id);
    let mut rtts_us: Vec<u128> = Vec::with_capacity(cli.pings as usize);
    for _ in 0..cli.pings {
        let start = Instant::now();
        client.ping().await?;
        rtts_us.push(start.elapsed().as_micros());
    }
    rtts_us.sort_unstable();
    if let Some(median) = rtts_us.get(rtts_us.len() / 2) {
        println!("{} pings, median round trip {median} µs", rtts_us.len());
    }
    Ok(())
}
