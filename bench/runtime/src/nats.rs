//! NATS JetStream: the raw baselines with async-nats (same version and
//! features as the generated crate).

use crate::measure::{Meter, Sample};
use crate::raw::{self, Counter};
use crate::{Cfg, Result};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use futures_util::StreamExt as _;
use std::sync::Arc;

generated_direct!(bench_nats_events);
generated_outbox!(bench_nats_outbox_events);
broker_phases!("bench-nats", "bench-nats-outbox");

const URL: &str = "nats://127.0.0.1:4222";
/// The generated service's stream and subject (see bench/runtime.sh).
const STREAM: &str = "BENCH_NATS";
const SUBJECT: &str = "bench_nats.item.created";

async fn context() -> Result<jetstream::Context> {
    Ok(jetstream::new(async_nats::connect(URL).await?))
}

/// Delete a service's streams (its consumers go with them).
async fn reset(service: &str) -> Result<()> {
    let js = context().await?;
    let upper = service.to_uppercase();
    for stream in [
        upper.replace('-', "_"),
        format!("{upper}_DLQ"),
        format!("{upper}_RETRY"),
    ] {
        // Absent is fine.
        let _ = js.delete_stream(&stream).await;
    }
    Ok(())
}

async fn cleanup(service: &str) -> Result<()> {
    reset(service).await
}

/// JetStream publishes with `Nats-Msg-Id` (as the generated side), their
/// PubAcks pipelined per batch.
async fn publish_raw(cfg: &Cfg) -> Result<Sample> {
    let js = context().await?;
    let items: Vec<raw::Item> = (0..cfg.count).map(raw::item).collect();
    let send = |(id, body): (String, Vec<u8>)| {
        let js = js.clone();
        async move {
            let message = PublishMessage::build()
                .payload(body.into())
                .message_id(id)
                .header("Content-Type", "application/cloudevents+json");
            js.send_publish(SUBJECT, message).await
        }
    };
    send(raw::body_with_id(&items[0])).await?.await?;
    let meter = Meter::start();
    for chunk in items.chunks(cfg.batch) {
        let mut acks = Vec::with_capacity(chunk.len());
        for item in chunk {
            acks.push(send(raw::body_with_id(item)).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(meter.stop(cfg.count))
}

/// A durable pull consumer of the same stream, explicit acks, up to the
/// prefetch handled at once, each decoded then acked.
async fn consume_raw(cfg: &Cfg) -> Result<Sample> {
    let js = context().await?;
    let stream = js.get_stream(STREAM).await?;
    let counter = Arc::new(Counter::new(cfg.count));
    let meter = Meter::start();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench-raw".to_string()),
            filter_subject: SUBJECT.to_string(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(usize::from(raw::PREFETCH))
        .messages()
        .await?;
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(raw::PREFETCH)));
    let handled = counter.clone();
    let driver = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let Some(Ok(message)) = messages.next().await else {
                break;
            };
            let handled = handled.clone();
            tokio::spawn(async move {
                std::hint::black_box(raw::decode(&message.payload));
                if message.ack().await.is_ok() {
                    handled.hit();
                }
                drop(permit);
            });
        }
    });
    counter.wait().await;
    let sample = meter.stop(cfg.count);
    driver.abort();
    Ok(sample)
}
