//! RabbitMQ: the raw baselines with lapin (same version and features as
//! the generated crate).

use crate::measure::{Meter, Sample};
use crate::raw::{self, Counter};
use crate::{Cfg, Result};
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::sync::Arc;

generated_direct!(bench_rabbitmq_events);
generated_outbox!(bench_rabbitmq_outbox_events);
broker_phases!("bench-rabbitmq", "bench-rabbitmq-outbox");

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The generated service's exchange and queue (see bench/runtime.sh).
const EXCHANGE: &str = "bench_rabbitmq";
const QUEUE: &str = "bench-rabbitmq";

async fn open() -> Result<(Connection, Channel)> {
    let connection = Connection::connect(URL, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Delete a service's exchange and queues.
async fn reset(service: &str) -> Result<()> {
    let (connection, ch) = open().await?;
    for queue in [
        service.to_string(),
        format!("{service}.dlq"),
        format!("{service}.retry.1000ms"),
        format!("{service}.retry.2000ms"),
    ] {
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    let exchange = service.replace('-', "_");
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}

async fn cleanup(service: &str) -> Result<()> {
    reset(service).await
}

/// Persistent messages with publisher confirms, pipelined per batch: all
/// of a batch are sent, then its confirms awaited (as `_batch` does).
async fn publish_raw(cfg: &Cfg) -> Result<Sample> {
    let (connection, ch) = open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let items: Vec<raw::Item> = (0..cfg.count).map(raw::item).collect();
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into());
    let send = |body: Vec<u8>| {
        let ch = ch.clone();
        let props = props.clone();
        async move {
            ch.basic_publish(
                EXCHANGE.into(),
                raw::EVENT.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
        }
    };
    // Warm up, as the generated side does.
    send(raw::body(&items[0])).await?.await?;
    let meter = Meter::start();
    for chunk in items.chunks(cfg.batch) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for item in chunk {
            confirms.push(send(raw::body(item)).await?);
        }
        for confirm in confirms {
            if !confirm.await?.is_ack() {
                return Err("nacked".into());
            }
        }
    }
    let sample = meter.stop(cfg.count);
    let _ = connection.close(200, "bye".into()).await;
    Ok(sample)
}

/// Same prefetch; every delivery handled in its own task (so up to the
/// prefetch at once), decoded into the typed payload, then acked.
async fn consume_raw(cfg: &Cfg) -> Result<Sample> {
    let (connection, ch) = open().await?;
    ch.basic_qos(raw::PREFETCH, BasicQosOptions::default())
        .await?;
    let counter = Arc::new(Counter::new(cfg.count));
    let meter = Meter::start();
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let handled = counter.clone();
    let driver = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let handled = handled.clone();
            tokio::spawn(async move {
                std::hint::black_box(raw::decode(&delivery.data));
                if delivery.ack(BasicAckOptions::default()).await.is_ok() {
                    handled.hit();
                }
            });
        }
    });
    counter.wait().await;
    let sample = meter.stop(cfg.count);
    driver.abort();
    let _ = connection.close(200, "bye".into()).await;
    Ok(sample)
}
