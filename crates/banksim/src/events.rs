//! `banksim events tail`: prints the event stream that the outbox relay publishes to NATS JetStream, one JSON
//! event per line, in order — the smallest consumer there is, and an example for writing one.

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use banksim_server::config::Config;
use futures::StreamExt;

/// What `events tail` reads.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only events published from now on (by default the stream is read from its first event).
    #[arg(long)]
    pub new: bool,
    /// Stop after this many events (by default it follows the stream until interrupted).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Follows `NATS_STREAM` on `NATS_URL` with an ordered consumer (no state on the server, nothing to acknowledge)
/// and prints each event's JSON on its own line.
pub async fn tail(config: &Config, args: &TailArgs) -> anyhow::Result<()> {
    let url = config.nats_url().context("set NATS_URL to the NATS server the relay publishes to")?;
    let client = async_nats::connect(url).await.context("connecting to NATS_URL")?;
    let stream = jetstream::new(client)
        .get_stream(&config.nats_stream)
        .await
        .with_context(|| format!("no stream {} yet: a server with NATS_URL creates it", config.nats_stream))?;
    let deliver_policy = if args.new { consumer::DeliverPolicy::New } else { consumer::DeliverPolicy::All };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy, ..Default::default() })
        .await
        .context("creating an ordered consumer")?;
    let mut messages = consumer.messages().await.context("reading the stream")?;
    let mut printed = 0;
    while args.limit.is_none_or(|limit| printed < limit) {
        let Some(message) = messages.next().await else { break };
        let message = message.context("reading the stream")?;
        println!("{}", String::from_utf8_lossy(&message.payload));
        printed += 1;
    }
    Ok(())
}
