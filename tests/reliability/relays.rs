//! Test program for `tests/reliability.rs` (copied into the generated Redis
//! service as an example): `RELAYS` outbox relays in one process, each
//! with its own pool and broker connection as separate instances have,
//! publish the outbox until `ROWS` rows were published. It prints
//! `relays running` once they run, so the test can then fill the outbox.

use rel_events as events;
use std::time::Duration;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relays = env("RELAYS", 4);
    let rows = env("ROWS", 40_000);
    let batch = env("BATCH", 500);
    let database_url = std::env::var(events::db::DATABASE_URL_ENV)?;
    let redis_url = std::env::var("REDIS_URL")?;
    let pool = events::db::pool(&database_url, 2)?;
    events::db::migrate(&pool).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let broker = events::Broker::connect(&redis_url).await?;
        let relay = events::outbox::Relay::new(
            events::db::pool(&database_url, 8)?,
            events::Publisher::new(broker),
            &database_url,
        )
        .batch_size(batch)
        .poll_interval(Duration::from_millis(5));
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(relay.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }
    println!("relays running");
    loop {
        let row = pool
            .get()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE published_at IS NOT NULL) FROM evgen_outbox",
                &[],
            )
            .await?;
        if row.get::<_, i64>(0) >= rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await??;
    }
    println!("published {rows}");
    Ok(())
}
