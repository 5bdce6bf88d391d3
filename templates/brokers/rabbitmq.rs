{{ header }}
//! RabbitMQ transport (lapin): a durable topic exchange, one durable queue
//! for this service bound to the events it consumes, TTL retry queues that
//! dead-letter back into it, and a dead-letter queue.
//!
//! Publishing waits for publisher confirms. Consuming acks only after the
//! handler (or the forward to a retry or dead-letter queue) succeeded, so
//! a crash at any point redelivers rather than loses.

use crate::subscriber::{DeadLetter, Dispatcher, Handlers, Outcome, RETRY_DELAYS_MS};
use ::futures_util::StreamExt as _;
use ::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use ::lapin::types::{AMQPValue, FieldTable, ShortString};
use ::lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use ::std::sync::Arc;
use ::std::time::Duration;

/// Environment variable with the broker URL (`amqp://` or `amqps://`).
pub const URL_ENV: &str = "AMQP_URL";
/// The URL used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The topic exchange every service of the catalog publishes to.
const EXCHANGE: &str = {{ exchange_lit }};
/// This service's queue.
const QUEUE: &str = {{ queue_lit }};
/// This service's dead-letter queue.
const DLQ: &str = {{ dlq_lit }};
/// Unacknowledged deliveries in flight at most.
const PREFETCH: u16 = {{ prefetch }};

/// How long a publish may wait for its confirm (and an ack for the
/// broker) before the connection is taken for dead and reopened: a
/// connection cut at the wrong moment may never answer.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

const H_ATTEMPT: &str = "x-evgen-attempt";
const H_ROUTING_KEY: &str = "x-evgen-routing-key";
const H_REASON: &str = "x-evgen-reason";
const H_ERROR: &str = "x-evgen-error";
const H_FIRST_FAILURE: &str = "x-evgen-first-failure";

impl ::std::convert::From<::lapin::Error> for crate::Error {
    fn from(e: ::lapin::Error) -> Self {
        crate::Error::Broker(e.to_string())
    }
}

/// A connection to RabbitMQ, shared by the publisher and the subscriber.
///
/// Cheap to clone. When the connection drops, the next operation opens a
/// new one; the subscriber reconnects with backoff on its own.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    url: ::std::string::String,
    publish: ::tokio::sync::Mutex<::std::option::Option<(Connection, Channel)>>,
}

async fn open(url: &str) -> ::std::result::Result<(Connection, Channel), crate::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn header(props: &BasicProperties, name: &str) -> ::std::option::Option<::std::string::String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The AMQP body and properties of an envelope: persistent, typed.
fn message(
    envelope: &crate::Envelope,
) -> ::std::result::Result<(::std::vec::Vec<u8>, BasicProperties), crate::Error> {
    let body = ::serde_json::to_vec(envelope)?;
    // No `message_id`: the id is in the body, and the property cost 10-25 %
    // of the publish rate on a 2-core machine (README, Benchmarks).
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into())
        .with_type(envelope.kind.as_str().into());
    Ok((body, props))
}

fn retry_queue(delay_ms: u64) -> ::std::string::String {
    format!("{QUEUE}.retry.{delay_ms}ms")
}

impl Broker {
    /// Connect to `url`; fails when the broker cannot be reached now.
    pub async fn connect(url: &str) -> ::std::result::Result<Self, crate::Error> {
        let broker = Broker {
            inner: Arc::new(Inner {
                url: url.to_string(),
                publish: ::tokio::sync::Mutex::new(None),
            }),
        };
        broker.channel().await?;
        Ok(broker)
    }

    /// Connect to the URL in [`URL_ENV`], or [`DEFAULT_URL`].
    pub async fn from_env() -> ::std::result::Result<Self, crate::Error> {
        let url = ::std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
        Self::connect(&url).await
    }

    /// The publishing channel (confirms on), reopened when it was lost.
    async fn channel(&self) -> ::std::result::Result<Channel, crate::Error> {
        let mut guard = self.inner.publish.lock().await;
        if let Some((connection, channel)) = guard.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let (connection, channel) = open(&self.inner.url).await?;
        *guard = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn forget(&self) {
        *self.inner.publish.lock().await = None;
    }

    /// Declare the exchange, this service's queue with its bindings, its
    /// retry queues and its dead-letter queue. Idempotent.
    pub async fn declare_topology(&self) -> ::std::result::Result<(), crate::Error> {
        let ch = self.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        if crate::CONSUMES.is_empty() {
            return Ok(());
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(QUEUE.into(), durable, FieldTable::default())
            .await?;
        ch.queue_declare(DLQ.into(), durable, FieldTable::default())
            .await?;
        for key in crate::CONSUMES {
            let options = QueueBindOptions::default();
            ch.queue_bind(
                QUEUE.into(),
                EXCHANGE.into(),
                (*key).into(),
                options,
                FieldTable::default(),
            )
            .await?;
        }
        for delay in RETRY_DELAYS_MS {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(*delay as i64),
            );
            args.insert("x-dead-letter-exchange".into(), text(""));
            args.insert("x-dead-letter-routing-key".into(), text(QUEUE));
            ch.queue_declare(retry_queue(*delay).as_str().into(), durable, args)
                .await?;
        }
        Ok(())
    }

    /// Publish an envelope to the exchange and wait for the broker's confirm.
    pub(crate) async fn publish(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<(), crate::Error> {
        let (body, props) = message(envelope)?;
        self.publish_raw(EXCHANGE, &envelope.kind, &body, props)
            .await
    }

    /// Publish envelopes in order with their confirms pipelined: all are
    /// sent, then every confirm is awaited. `Ok` only when all were
    /// confirmed; on error some may have been published (at least once).
    pub(crate) async fn publish_many(
        &self,
        envelopes: &[crate::Envelope],
    ) -> ::std::result::Result<(), crate::Error> {
        let ch = self.channel().await?;
        let mut confirms = ::std::vec::Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let (body, props) = message(envelope)?;
            let options = BasicPublishOptions::default();
            let routing_key = envelope.kind.as_str().into();
            match ch
                .basic_publish(EXCHANGE.into(), routing_key, options, &body, props)
                .await
            {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    self.forget().await;
                    return Err(e.into());
                }
            }
        }
        for confirm in confirms {
            match ::tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Ok(Ok(c)) if c.is_ack() => {}
                Ok(Ok(_)) => return Err(crate::Error::NotConfirmed("the broker nacked".into())),
                Ok(Err(e)) => {
                    self.forget().await;
                    return Err(crate::Error::NotConfirmed(e.to_string()));
                }
                Err(_) => {
                    self.forget().await;
                    return Err(crate::Error::NotConfirmed("no confirm in time".into()));
                }
            }
        }
        Ok(())
    }

    async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> ::std::result::Result<(), crate::Error> {
        // One retry on a fresh connection: a publish on a channel that died
        // since its last use fails at once, and the message is not lost.
        let mut last = None;
        for _ in 0..2 {
            let ch = self.channel().await?;
            let options = BasicPublishOptions::default();
            let sent = ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    body,
                    props.clone(),
                )
                .await;
            let confirmed = match sent {
                Ok(confirm) => match ::tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                    Ok(c) => c.map_err(|e| e.to_string()),
                    Err(_) => Err("no confirm in time".to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match confirmed {
                Ok(c) if c.is_ack() => return Ok(()),
                Ok(_) => return Err(crate::Error::NotConfirmed("the broker nacked".into())),
                Err(e) => {
                    last = Some(e);
                    self.forget().await;
                }
            }
        }
        let e = last.unwrap_or_default();
        Err(crate::Error::NotConfirmed(e))
    }

    /// Consume on one connection until `shutdown` resolves (`Ok`) or the
    /// connection fails (`Err`); [`crate::Subscriber`] reconnects.
    pub(crate) async fn consume_once<H: Handlers>(
        &self,
        dispatcher: &Arc<Dispatcher<H>>,
        mut shutdown: ::std::pin::Pin<&mut impl ::std::future::Future<Output = ()>>,
    ) -> ::std::result::Result<(), crate::Error> {
        let (connection, forward) = open(&self.inner.url).await?;
        let ch = connection.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let options = BasicConsumeOptions::default();
        let mut consumer = ch
            .basic_consume(QUEUE.into(), "".into(), options, FieldTable::default())
            .await?;
        ::tracing::info!(queue = QUEUE, prefetch = PREFETCH, "consuming");
        let mut tasks = ::tokio::task::JoinSet::new();
        let result = loop {
            ::tokio::select! {
                () = shutdown.as_mut() => break Ok(()),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        tasks.spawn(handle(dispatcher.clone(), forward.clone(), delivery));
                    }
                    Some(Err(e)) => break Err(crate::Error::from(e)),
                    None => break Err(crate::Error::Broker("the consumer was cancelled".into())),
                },
            }
        };
        // Stop taking messages, finish the ones in flight; unacked
        // prefetched ones go back to the queue when the connection closes.
        let tag = consumer.tag();
        let _ = ch.basic_cancel(tag, BasicCancelOptions::default()).await;
        while tasks.join_next().await.is_some() {}
        let _ = connection.close(200, "bye".into()).await;
        result
    }

    /// Read up to `limit` dead letters without removing them.
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<::std::vec::Vec<DeadLetter>, crate::Error> {
        let (connection, ch) = open(&self.inner.url).await?;
        let mut out = ::std::vec::Vec::new();
        while out.len() < limit {
            let Some(msg) = ch.basic_get(DLQ.into(), BasicGetOptions::default()).await? else {
                break;
            };
            let p = &msg.delivery.properties;
            out.push(DeadLetter {
                event: header(p, H_ROUTING_KEY).unwrap_or_default(),
                reason: header(p, H_REASON).unwrap_or_default(),
                error: header(p, H_ERROR).unwrap_or_default(),
                attempts: header(p, H_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(1),
                first_failure: header(p, H_FIRST_FAILURE).unwrap_or_default(),
                body: msg.delivery.data.clone(),
            });
        }
        // Closing the channel returns every unacked message to the queue.
        let _ = connection.close(200, "bye".into()).await;
        Ok(out)
    }

    /// Move up to `limit` dead letters back to this service's queue, with
    /// their attempt count reset. Returns how many were moved.
    pub async fn replay_dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<usize, crate::Error> {
        let (connection, ch) = open(&self.inner.url).await?;
        let mut moved = 0;
        while moved < limit {
            let Some(msg) = ch.basic_get(DLQ.into(), BasicGetOptions::default()).await? else {
                break;
            };
            let d = &msg.delivery;
            let mut headers = FieldTable::default();
            let key = header(&d.properties, H_ROUTING_KEY).unwrap_or_default();
            headers.insert(H_ROUTING_KEY.into(), text(&key));
            let props = d.properties.clone().with_headers(headers);
            self.publish_raw("", QUEUE, &d.data, props).await?;
            d.ack(BasicAckOptions::default()).await?;
            moved += 1;
        }
        let _ = connection.close(200, "bye".into()).await;
        Ok(moved)
    }
}

/// Handle one delivery and settle it.
async fn handle<H: Handlers>(
    dispatcher: Arc<Dispatcher<H>>,
    forward: Channel,
    d: ::lapin::message::Delivery,
) {
    let attempt: u32 = header(&d.properties, H_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let routing_key =
        header(&d.properties, H_ROUTING_KEY).unwrap_or_else(|| d.routing_key.to_string());
    let first_failure =
        header(&d.properties, H_FIRST_FAILURE).unwrap_or_else(|| ::chrono::Utc::now().to_rfc3339());
    let outcome = dispatcher.dispatch(&d.data, attempt).await;
    let (queue, headers) = match &outcome {
        Outcome::Ack => (None, None),
        Outcome::Retry {
            delay_ms,
            next_attempt,
            error,
        } => {
            ::tracing::warn!(%routing_key, attempt, delay_ms, %error, "handler failed; retrying");
            let mut h = FieldTable::default();
            h.insert(
                H_ATTEMPT.into(),
                AMQPValue::LongLongInt(i64::from(*next_attempt)),
            );
            h.insert(H_ERROR.into(), text(error));
            (Some(retry_queue(*delay_ms)), Some(h))
        }
        Outcome::DeadLetter { reason, error } => {
            ::tracing::error!(%routing_key, attempt, reason = reason.as_str(), %error, "dead-lettered");
            let mut h = FieldTable::default();
            h.insert(H_ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt)));
            h.insert(H_REASON.into(), text(reason.as_str()));
            h.insert(H_ERROR.into(), text(error));
            (Some(DLQ.to_string()), Some(h))
        }
        Outcome::Discard { reason, error } => {
            ::tracing::error!(%routing_key, attempt, reason = reason.as_str(), %error, "discarded");
            (None, None)
        }
    };
    if let (Some(queue), Some(mut h)) = (queue, headers) {
        h.insert(H_ROUTING_KEY.into(), text(&routing_key));
        h.insert(H_FIRST_FAILURE.into(), text(&first_failure));
        let props = d.properties.clone().with_headers(h).with_delivery_mode(2);
        let options = BasicPublishOptions::default();
        let sent = forward
            .basic_publish("".into(), ShortString::from(queue), options, &d.data, props)
            .await;
        let confirmed = match sent {
            Ok(confirm) => ::tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                .await
                .is_ok_and(|c| c.is_ok_and(|c| c.is_ack())),
            Err(_) => false,
        };
        if !confirmed {
            // Not forwarded: put it back rather than lose it.
            ::tracing::warn!(%routing_key, "could not forward the message; requeueing");
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = ::tokio::time::timeout(CONFIRM_TIMEOUT, d.nack(requeue)).await;
            return;
        }
    }
    match ::tokio::time::timeout(CONFIRM_TIMEOUT, d.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            ::tracing::warn!(%routing_key, error = %e, "ack failed; the broker will redeliver")
        }
        Err(_) => ::tracing::warn!(%routing_key, "ack timed out; the broker will redeliver"),
    }
}
