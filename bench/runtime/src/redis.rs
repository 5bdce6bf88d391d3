//! Redis Streams: the raw baselines with redis-rs (same version and
//! features as the generated crate).

use crate::measure::{Meter, Sample};
use crate::raw::{self, Counter};
use crate::{Cfg, Result};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use std::sync::Arc;

generated_direct!(bench_redis_events);
generated_outbox!(bench_redis_outbox_events);
broker_phases!("bench-redis", "bench-redis-outbox");

const URL: &str = "redis://127.0.0.1:6379";
/// The generated service's stream (see bench/runtime.sh).
const STREAM: &str = "bench_redis.item";
/// The raw consumer's group on it.
const GROUP: &str = "bench-raw";
/// Same trimming as the generated publisher.
const MAXLEN: usize = 1_000_000;

async fn connection() -> Result<MultiplexedConnection> {
    let client = redis::Client::open(URL)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// Delete a service's streams and retry set (its groups go with them).
async fn reset(service: &str) -> Result<()> {
    let mut conn = connection().await?;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}.item", service.replace('-', "_")))
        .arg(format!("{service}.retry"))
        .arg(format!("{service}.delayed"))
        .arg(format!("{service}.dlq"))
        .query_async(&mut conn)
        .await?;
    Ok(())
}

async fn cleanup(service: &str) -> Result<()> {
    reset(service).await
}

fn xadd(id: &str, key: &str, body: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAXLEN)
        .arg("*")
        .arg("type")
        .arg(raw::EVENT)
        .arg("id")
        .arg(id)
        .arg("content-type")
        .arg("application/cloudevents+json")
        .arg("partitionkey")
        .arg(key)
        .arg("body")
        .arg(body);
    cmd
}

/// XADDs with the same fields as the generated side, one pipeline (one
/// round trip) per batch; every reply checked.
async fn publish_raw(cfg: &Cfg) -> Result<Sample> {
    let mut conn = connection().await?;
    let items: Vec<raw::Item> = (0..cfg.count).map(raw::item).collect();
    let (id, body) = raw::body_with_id(&items[0]);
    let _: String = xadd(&id, &items[0].item_id.to_string(), &body)
        .query_async(&mut conn)
        .await?;
    let meter = Meter::start();
    for chunk in items.chunks(cfg.batch) {
        let mut pipe = redis::pipe();
        for item in chunk {
            let (id, body) = raw::body_with_id(item);
            pipe.add_command(xadd(&id, &item.item_id.to_string(), &body));
        }
        let ids: Vec<String> = pipe.query_async(&mut conn).await?;
        if ids.len() != chunk.len() {
            return Err("not every entry was appended".into());
        }
    }
    Ok(meter.stop(cfg.count))
}

/// A consumer group reading up to the free slots with XREADGROUP; each
/// entry handled in its own task (up to the prefetch at once), decoded,
/// then XACKed.
async fn consume_raw(cfg: &Cfg) -> Result<Sample> {
    let mut reader = connection().await?;
    let acker = connection().await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut reader)
        .await?;
    let counter = Arc::new(Counter::new(cfg.count));
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(raw::PREFETCH)));
    let meter = Meter::start();
    let handled = counter.clone();
    let driver = tokio::spawn(async move {
        loop {
            let Ok(first) = permits.clone().acquire_owned().await else {
                break;
            };
            let free = permits.available_permits() + 1;
            drop(first);
            let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg("raw")
                .arg("COUNT")
                .arg(free)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(">")
                .query_async(&mut reader)
                .await;
            let Ok(reply) = reply else { break };
            for key in reply.unwrap_or_default().keys {
                for entry in key.ids {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let handled = handled.clone();
                    let mut acker = acker.clone();
                    tokio::spawn(async move {
                        let body: Vec<u8> = entry.get("body").unwrap_or_default();
                        std::hint::black_box(raw::decode(&body));
                        let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                            .arg(STREAM)
                            .arg(GROUP)
                            .arg(&entry.id)
                            .query_async(&mut acker)
                            .await;
                        if acked.is_ok() {
                            handled.hit();
                        }
                        drop(permit);
                    });
                }
            }
        }
    });
    counter.wait().await;
    let sample = meter.stop(cfg.count);
    driver.abort();
    Ok(sample)
}
