//! `courier demo`: steady demo traffic (products created at a given rate) to watch with
//! `courier tail` or the web app.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(long, env = "COURIER_API_URL", default_value = "http://127.0.0.1:8000")]
    pub api: String,
    /// Documents per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Stop after this many documents (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

const NAMES: [&str; 6] = ["Camiseta", "Pantalón", "Chaqueta", "Sudadera", "Gorra", "Bufanda"];
const SIZES: [&str; 5] = ["XS", "S", "M", "L", "XL"];

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.rate <= 10_000.0, "--rate must be between 0 and 10000");
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/products", args.api.trim_end_matches('/'));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let body = serde_json::json!({
            "nombre": NAMES[(n % 6) as usize],
            "precio": 9.99 + (n % 50) as f64,
            "talla": SIZES[(n % 5) as usize],
        });
        let response =
            http.post(&url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "POST {url} answered {status}: {text}");
        println!("created {text}");
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(())
}
