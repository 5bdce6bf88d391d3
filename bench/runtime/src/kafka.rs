//! Kafka (tansu): the raw baselines with rdkafka (same version and
//! features as the generated crate).

use crate::measure::{Meter, Sample};
use crate::raw::{self, Counter};
use crate::{Cfg, Result};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

generated_direct!(bench_kafka_events);
generated_outbox!(bench_kafka_outbox_events);
broker_phases!("bench-kafka", "bench-kafka-outbox");

const BROKERS: &str = "127.0.0.1:9092";
/// The generated service's topic (see bench/runtime.sh).
const TOPIC: &str = "bench_kafka.item";
/// The raw consumer's group.
const RAW_GROUP: &str = "bench-raw-kafka";

fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", BROKERS);
    c
}

fn topics(service: &str) -> Vec<String> {
    vec![
        format!("{}.item", service.replace('-', "_")),
        format!("{service}.retry"),
        format!("{service}.dlq"),
    ]
}

/// Move the service's consumer groups (and the raw one) to the end of its
/// topics, so a phase reads only what it publishes. Topics are kept: the
/// memory storage of tansu is not relied on to delete them.
async fn reset(service: &str) -> Result<()> {
    let service = service.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let timeout = Duration::from_secs(10);
        for group in [service.as_str(), RAW_GROUP] {
            let consumer: BaseConsumer = config().set("group.id", group).create()?;
            let mut end = TopicPartitionList::new();
            for topic in topics(&service) {
                let Ok(metadata) = consumer.fetch_metadata(Some(&topic), timeout) else {
                    continue;
                };
                for t in metadata.topics() {
                    for p in t.partitions() {
                        let (_, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
                        end.add_partition_offset(&topic, p.id(), Offset::Offset(high))?;
                    }
                }
            }
            if end.count() > 0 {
                consumer.commit(&end, CommitMode::Sync)?;
            }
        }
        Ok(())
    })
    .await?
}

/// Delete the service's topics.
async fn cleanup(service: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config().create()?;
    let names = topics(service);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for deleted in admin.delete_topics(&names, &options).await? {
        if let Err((topic, code)) = deleted {
            eprintln!("    could not delete topic {topic}: {code}");
        }
    }
    Ok(())
}

/// The same producer settings as the generated one (idempotent,
/// `acks=all`, linger 1 ms or `KAFKA_CONFIG_LINGER_MS`, which the generated
/// producer reads too), keyed, delivery reports pipelined per batch.
async fn publish_raw(cfg: &Cfg) -> Result<Sample> {
    let producer: FutureProducer = config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set(
            "linger.ms",
            std::env::var("KAFKA_CONFIG_LINGER_MS").unwrap_or_else(|_| "1".to_string()),
        )
        .create()?;
    let items: Vec<raw::Item> = (0..cfg.count).map(raw::item).collect();
    let headers = || {
        OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        })
    };
    let key = items[0].item_id.to_string();
    let body = raw::body(&items[0]);
    let record = FutureRecord::to(TOPIC)
        .key(key.as_bytes())
        .payload(&body)
        .headers(headers());
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(e, _)| e)?;
    let meter = Meter::start();
    for chunk in items.chunks(cfg.batch) {
        let mut reports = Vec::with_capacity(chunk.len());
        for item in chunk {
            let key = item.item_id.to_string();
            let body = raw::body(item);
            let mut record = FutureRecord::to(TOPIC)
                .key(key.as_bytes())
                .payload(&body)
                .headers(headers());
            loop {
                match producer.send_result(record) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for report in reports {
            report.await?.map_err(|(e, _)| e)?;
        }
    }
    Ok(meter.stop(cfg.count))
}

/// A consumer group with offsets stored after handling (auto-committed),
/// every message handled in its own task, up to the prefetch at once.
/// Simpler than the generated consumer: no per-key order, and an offset
/// may be stored before an earlier one of its partition is handled.
async fn consume_raw(cfg: &Cfg) -> Result<Sample> {
    let consumer: StreamConsumer = config()
        .set("group.id", RAW_GROUP)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    let consumer = Arc::new(consumer);
    let counter = Arc::new(Counter::new(cfg.count));
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(raw::PREFETCH)));
    let meter = Meter::start();
    consumer.subscribe(&[TOPIC])?;
    let handled = counter.clone();
    let reader = consumer.clone();
    let driver = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let message = match reader.recv().await {
                Ok(m) => m.detach(),
                Err(_) => continue,
            };
            let handled = handled.clone();
            let store = reader.clone();
            tokio::spawn(async move {
                std::hint::black_box(raw::decode(message.payload().unwrap_or_default()));
                let stored =
                    store.store_offset(message.topic(), message.partition(), message.offset() + 1);
                if stored.is_ok() {
                    handled.hit();
                }
                drop(permit);
            });
        }
    });
    counter.wait().await;
    let sample = meter.stop(cfg.count);
    driver.abort();
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    consumer.unsubscribe();
    Ok(sample)
}
