//! The generated side, written once for every broker: the generated
//! crates of all brokers have the same API, so each broker module
//! instantiates these macros with its own crates.

/// The benchmarks of the service without outbox (`bench-<broker>`):
/// publish, consume, and latency through the publisher.
macro_rules! generated_direct {
    ($ev:ident) => {
        pub mod gen_direct {
            use crate::measure::{Meter, Sample};
            use crate::raw::Counter;
            use crate::{Cfg, Result};
            use std::sync::Arc;
            use std::time::Duration;
            use $ev as events;

            generated_common!($ev);

            pub async fn declare() -> Result<()> {
                broker().await?.declare_topology().await?;
                Ok(())
            }

            /// Publish `count` events with the `_batch` method, `batch` at a time.
            pub async fn publish(cfg: &Cfg) -> Result<Sample> {
                let broker = broker().await?;
                broker.declare_topology().await?;
                let publisher = events::Publisher::new(broker);
                let items: Vec<events::ItemCreated> = (0..cfg.count).map(item).collect();
                // Warm up: connection, channel, validator.
                publisher.item_created(&item(0)).await?;
                let meter = Meter::start();
                for chunk in items.chunks(cfg.batch) {
                    publisher.item_created_batch(chunk).await?;
                }
                Ok(meter.stop(cfg.count))
            }

            /// Fill this service's queue/stream with `count` events (untimed).
            pub async fn prefill(cfg: &Cfg) -> Result<()> {
                let broker = broker().await?;
                broker.declare_topology().await?;
                let publisher = events::Publisher::new(broker);
                let items: Vec<events::ItemCreated> = (0..cfg.count).map(item).collect();
                for chunk in items.chunks(cfg.batch) {
                    publisher.item_created_batch(chunk).await?;
                }
                Ok(())
            }

            /// Drain `count` events with the generated subscriber.
            pub async fn consume(cfg: &Cfg) -> Result<Sample> {
                let broker = broker().await?;
                let counter = Arc::new(Counter::new(cfg.count));
                let handlers = Handler {
                    counter: counter.clone(),
                    latencies: None,
                };
                let subscriber = events::Subscriber::new(broker, handlers);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let meter = Meter::start();
                let task = tokio::spawn(subscriber.run(async move {
                    let _ = stopped.await;
                }));
                counter.wait().await;
                let sample = meter.stop(cfg.count);
                let _ = stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
                Ok(sample)
            }

            /// Publish one event at a time at `rate`/s (each call awaits its
            /// confirm; calls overlap), handled by the generated subscriber
            /// in the same process: publish → handler latency.
            pub async fn latency(cfg: &Cfg) -> Result<Sample> {
                let broker = broker().await?;
                broker.declare_topology().await?;
                let publisher = events::Publisher::new(broker.clone());
                let total = cfg.rate * cfg.latency_secs;
                let (counter, latencies, handlers) = latency_handler(total);
                let subscriber = events::Subscriber::new(broker, handlers);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(subscriber.run(async move {
                    let _ = stopped.await;
                }));
                publisher
                    .item_created(&item(crate::generated::PROBE))
                    .await?;
                crate::generated::ready(&counter).await?;
                let meter = Meter::start();
                crate::generated::steady(cfg.rate, total, |i| {
                    let publisher = publisher.clone();
                    async move {
                        publisher.item_created(&item(i)).await?;
                        Ok(())
                    }
                })
                .await?;
                crate::generated::wait_all(&counter).await?;
                let sample = meter.stop(total);
                let _ = stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
                Ok(crate::generated::with_latencies(
                    sample, &latencies, cfg.rate,
                ))
            }
        }
    };
}

/// The benchmarks of the service with the PostgreSQL outbox
/// (`bench-<broker>-outbox`): relay throughput, and latency through
/// `outbox::enqueue` → relay → broker → subscriber (with its inbox).
macro_rules! generated_outbox {
    ($ev:ident) => {
        pub mod gen_outbox {
            use crate::measure::{Meter, Sample};
            use crate::raw::Counter;
            use crate::{Cfg, Result};
            use std::sync::Arc;
            use std::time::Duration;
            use $ev as events;

            generated_common!($ev);

            async fn open_pool(size: usize) -> Result<events::db::Pool> {
                crate::generated::ensure_database().await?;
                let pool = events::db::pool(&crate::database_url(), size)?;
                events::db::migrate(&pool).await?;
                Ok(pool)
            }

            async fn truncate(pool: &events::db::Pool) -> Result<()> {
                let client = pool.get().await?;
                client
                    .batch_execute("TRUNCATE evgen_outbox, evgen_inbox")
                    .await?;
                Ok(())
            }

            /// Enqueue `count` events (transactions of `batch` rows, untimed),
            /// then time the generated relay until every row is published.
            pub async fn relay(cfg: &Cfg) -> Result<Sample> {
                // EVGEN_BENCH_RELAY_POOL=2 leaves the relay one connection
                // (this phase holds the other for its progress query), so
                // its second batch in flight waits for a free one.
                let size = std::env::var("EVGEN_BENCH_RELAY_POOL")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(4);
                let pool = open_pool(size).await?;
                truncate(&pool).await?;
                let broker = broker().await?;
                broker.declare_topology().await?;
                let mut seq = 0;
                while seq < cfg.count {
                    let end = (seq + cfg.batch as u64).min(cfg.count);
                    let mut client = pool.get().await?;
                    let tx = client.transaction().await?;
                    for i in seq..end {
                        events::outbox::enqueue(&tx, &item(i)).await?;
                    }
                    tx.commit().await?;
                    seq = end;
                }
                let publisher = events::Publisher::new(broker);
                let relay =
                    events::outbox::Relay::new(pool.clone(), publisher, &crate::database_url());
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let meter = Meter::start();
                let task = tokio::spawn(relay.run(async move {
                    let _ = stopped.await;
                }));
                let client = pool.get().await?;
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let left: i64 = client
                        .query_one(
                            "SELECT count(*) FROM evgen_outbox WHERE published_at IS NULL",
                            &[],
                        )
                        .await?
                        .get(0);
                    if left == 0 {
                        break;
                    }
                }
                let sample = meter.stop(cfg.count);
                let _ = stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
                Ok(sample)
            }

            /// Enqueue one event per transaction at `rate`/s while the relay
            /// and the subscriber (with its inbox) run: enqueue → handler.
            pub async fn latency(cfg: &Cfg) -> Result<Sample> {
                let pool = open_pool(16).await?;
                truncate(&pool).await?;
                let inbox = open_pool(16).await?;
                let broker = broker().await?;
                broker.declare_topology().await?;
                let total = cfg.rate * cfg.latency_secs;
                let (counter, latencies, handlers) = latency_handler(total);
                let subscriber = events::Subscriber::new(broker.clone(), handlers, inbox);
                let relay = events::outbox::Relay::new(
                    pool.clone(),
                    events::Publisher::new(broker),
                    &crate::database_url(),
                );
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                let consumer = tokio::spawn(subscriber.run(until(stopped.clone())));
                let relaying = tokio::spawn(relay.run(until(stopped.clone())));
                {
                    let mut client = pool.get().await?;
                    let tx = client.transaction().await?;
                    events::outbox::enqueue(&tx, &item(crate::generated::PROBE)).await?;
                    tx.commit().await?;
                }
                crate::generated::ready(&counter).await?;
                let meter = Meter::start();
                crate::generated::steady(cfg.rate, total, |i| {
                    let pool = pool.clone();
                    async move {
                        let mut client = pool.get().await?;
                        let tx = client.transaction().await?;
                        events::outbox::enqueue(&tx, &item(i)).await?;
                        tx.commit().await?;
                        Ok(())
                    }
                })
                .await?;
                crate::generated::wait_all(&counter).await?;
                let sample = meter.stop(total);
                let _ = stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), relaying).await;
                Ok(crate::generated::with_latencies(
                    sample, &latencies, cfg.rate,
                ))
            }
        }
    };
}

/// Items shared by both services' modules.
macro_rules! generated_common {
    ($ev:ident) => {
        /// The `i`th payload; the same values as `raw::item`.
        pub fn item(i: u64) -> events::ItemCreated {
            events::ItemCreated {
                item_id: uuid::Uuid::new_v4(),
                seq: i,
                sku: format!("SKU-{:06}", i % 1_000_000),
                quantity: 1 + i % 5,
                price: 9.99 + (i % 100) as f64,
                currency: Some(events::types::ItemCreatedCurrency::Eur),
                created_at: chrono::Utc::now(),
                tags: Some(vec!["bench".to_string(), "runtime".to_string()]),
            }
        }

        pub async fn broker() -> Result<events::Broker> {
            Ok(events::Broker::from_env().await?)
        }

        type Latencies = Arc<std::sync::Mutex<Vec<(u64, f64)>>>;

        /// A handler that records latencies for `total` events plus the
        /// probe that shows the subscriber is ready.
        fn latency_handler(total: u64) -> (Arc<Counter>, Latencies, Handler) {
            let counter = Arc::new(Counter::new(total + 1));
            let latencies: Latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
            let handlers = Handler {
                counter: counter.clone(),
                latencies: Some(latencies.clone()),
            };
            (counter, latencies, handlers)
        }

        /// A trivial handler: counts, and records latencies when asked.
        struct Handler {
            counter: Arc<Counter>,
            latencies: Option<Latencies>,
        }

        impl events::Handlers for Handler {
            async fn item_created(
                &self,
                event: events::ItemCreated,
                ctx: &events::Context<'_>,
            ) -> std::result::Result<(), events::HandlerError> {
                if let Some(latencies) = &self.latencies {
                    let micros = (chrono::Utc::now() - ctx.envelope.time)
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner());
                    l.push((event.seq, micros as f64 / 1000.0));
                }
                std::hint::black_box(&event);
                self.counter.hit();
                Ok(())
            }
        }
    };
}

/// The phases of one broker. The broker module defines `reset(service)`
/// (a service's queues/streams empty, its consumers at their end),
/// `cleanup(service)` (all of them deleted), and the raw baselines
/// `publish_raw` and `consume_raw`.
macro_rules! broker_phases {
    ($direct:expr, $outbox:expr) => {
        pub async fn phase(name: &str, cfg: &crate::Cfg) -> crate::Result<crate::measure::Sample> {
            match name {
                // `publish-nv`: the same pair, the raw side not validating.
                "publish-gen" | "publish-nv-gen" => {
                    reset($direct).await?;
                    gen_direct::publish(cfg).await
                }
                "publish-raw" | "publish-nv-raw" => {
                    crate::raw::VALIDATE
                        .store(name == "publish-raw", std::sync::atomic::Ordering::Relaxed);
                    reset($direct).await?;
                    gen_direct::declare().await?;
                    publish_raw(cfg).await
                }
                // `consume-nv`: the same pair, the raw side not validating.
                "consume-gen" | "consume-nv-gen" => {
                    reset($direct).await?;
                    gen_direct::prefill(cfg).await?;
                    gen_direct::consume(cfg).await
                }
                "consume-raw" | "consume-nv-raw" => {
                    crate::raw::VALIDATE
                        .store(name == "consume-raw", std::sync::atomic::Ordering::Relaxed);
                    reset($direct).await?;
                    gen_direct::prefill(cfg).await?;
                    consume_raw(cfg).await
                }
                "relay" => {
                    reset($outbox).await?;
                    gen_outbox::relay(cfg).await
                }
                "latency-direct" => {
                    reset($direct).await?;
                    gen_direct::latency(cfg).await
                }
                "latency-outbox" => {
                    reset($outbox).await?;
                    gen_outbox::latency(cfg).await
                }
                "cleanup" => {
                    cleanup($direct).await?;
                    cleanup($outbox).await?;
                    Ok(crate::measure::Sample::default())
                }
                _ => Err(format!("unknown phase `{name}`").into()),
            }
        }
    };
}

/// The `seq` of the probe event a latency phase sends first.
pub const PROBE: u64 = u64::MAX >> 1;

/// Wait until the probe was handled: the subscriber is consuming.
pub async fn ready(counter: &crate::raw::Counter) -> crate::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while counter.count() == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err("the subscriber did not handle the probe in 60 s".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Start `send(i)` for every `i` below `total`, `rate` per second (sends
/// overlap: a slow one does not delay the next), and wait for them all.
pub async fn steady<F, Fut>(rate: u64, total: u64, send: F) -> crate::Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1) / rate as u32);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        sends.spawn(send(i));
        while let Some(sent) = sends.try_join_next() {
            sent??;
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    Ok(())
}

/// Wait until every event was handled (30 s at most after the last send).
pub async fn wait_all(counter: &crate::raw::Counter) -> crate::Result<()> {
    match tokio::time::timeout(std::time::Duration::from_secs(30), counter.wait()).await {
        Ok(()) => Ok(()),
        Err(_) => Err(format!("only {} events handled in time", counter.count()).into()),
    }
}

/// Percentiles of the latencies, the first second (warm-up) and the probe
/// left out.
pub fn with_latencies(
    mut sample: crate::measure::Sample,
    latencies: &std::sync::Mutex<Vec<(u64, f64)>>,
    rate: u64,
) -> crate::measure::Sample {
    let l = latencies.lock().unwrap_or_else(|e| e.into_inner());
    let mut ms: Vec<f64> = l
        .iter()
        .filter(|(seq, _)| *seq >= rate && *seq != PROBE)
        .map(|(_, ms)| *ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    sample.p50_ms = Some(crate::measure::percentile(&ms, 50.0));
    sample.p99_ms = Some(crate::measure::percentile(&ms, 99.0));
    sample.max_ms = ms.last().copied();
    sample
}

/// Create the benchmark database when it is missing.
pub async fn ensure_database() -> crate::Result<()> {
    let (client, connection) = tokio_postgres::connect(
        "postgres://postgres@127.0.0.1:5432/postgres",
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&crate::DATABASE],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", crate::DATABASE))
            .await?;
    }
    Ok(())
}
