{{ header }}
//! NATS JetStream transport (async-nats).
//!
//! Events go to subjects `<exchange>.<event>` of one stream over
//! `<exchange>.>`; the envelope id is the `Nats-Msg-Id`, so a publish
//! repeated within the stream's duplicate window is dropped. This service
//! reads each event it consumes through its own durable pull consumer with
//! explicit acks and at most [`MAX_DELIVER`] deliveries (the server, 2.9,
//! filters a consumer on one subject only).
//!
//! A retry is forwarded to this service's retry stream (a work queue no
//! other service reads) with its attempt, first-failure time and due time
//! in headers; its consumer NAKs it with the remaining delay, so the
//! server holds it until it is due. Dead letters go to this service's
//! dead-letter stream; replayed ones back to the retry stream.
//!
//! Publishing waits for the stream's PubAck. Consuming acks only after the
//! handler, or the forward to the retry or dead-letter stream, succeeded:
//! a crash redelivers rather than loses. Acks are not confirmed one by one
//! (an ack lost with the connection is a redelivery, which the inbox
//! absorbs); the connection is flushed when the consumer stops. A message whose handler crashed or hung on every delivery is
//! dead-lettered on the last one without running it again.

use crate::subscriber::{DeadLetter, Dispatcher, Handlers, Outcome, RETRY_DELAYS_MS, Reason};
use ::async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use ::async_nats::jetstream::context::PublishAckFuture;
use ::async_nats::jetstream::message::PublishMessage;
use ::async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use ::async_nats::jetstream::{self, AckKind};
use ::futures_util::StreamExt as _;
use ::std::sync::Arc;
use ::std::time::Duration;

/// Environment variable with the server URL (`nats://` or `tls://`).
pub const URL_ENV: &str = "NATS_URL";
/// The URL used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The subject prefix every service of the catalog publishes under.
const EXCHANGE: &str = {{ exchange_lit }};
/// The stream over `<exchange>.>`.
const STREAM: &str = {{ stream_lit }};
/// This service's dead-letter stream and its subject.
const DLQ_STREAM: &str = {{ dlq_stream_lit }};
const DLQ_SUBJECT: &str = {{ dlq_subject_lit }};
/// This service's retry stream (work queue), its subject and consumer.
const RETRY_STREAM: &str = {{ retry_stream_lit }};
const RETRY_SUBJECT: &str = {{ retry_subject_lit }};
const RETRY_DURABLE: &str = {{ retry_durable_lit }};
/// Messages handled at once at most.
const PREFETCH: usize = {{ prefetch }};
/// Deliveries of one message at most; more than one only when the handler
/// crashed or hung (a retry is a new message of the retry stream, whose
/// consumer gets one more for the NAK that waits for the due time).
const MAX_DELIVER: i64 = 5;
/// Messages delivered and not yet acked (NAKed ones included) per consumer.
const MAX_ACK_PENDING: i64 = 10_000;
/// How long the events stream keeps a message.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Publishes of one envelope id within this window are stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the server waits for an ack before it redelivers.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// While a handler runs, the ack deadline is pushed back this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

const CONTENT_TYPE: &str = "application/cloudevents+json";
const H_EVENT: &str = "Evgen-Event";
const H_SUBJECT: &str = "Evgen-Subject";
const H_ATTEMPT: &str = "Evgen-Attempt";
const H_DUE: &str = "Evgen-Due";
const H_REASON: &str = "Evgen-Reason";
const H_ERROR: &str = "Evgen-Error";
const H_FIRST_FAILURE: &str = "Evgen-First-Failure";

/// A durable consumer of this service: one per consumed event.
struct Spec {
    event: &'static str,
    subject: &'static str,
    durable: &'static str,
    /// Dead-letter (rather than drop) what fails for good.
    dead_letter: bool,
}

#[rustfmt::skip]
const CONSUMERS: &[Spec] = &[{{ consumers }}];

/// The consumer of the retry stream, whatever the event.
const RETRY: Spec = Spec {
    event: "*",
    subject: "",
    durable: RETRY_DURABLE,
    dead_letter: true,
};

/// A connection to NATS, shared by the publisher and the subscriber.
///
/// Cheap to clone. The client reconnects on its own; the subscriber
/// re-creates its consumers with backoff when they fail.
#[derive(Clone)]
pub struct Broker {
    js: jetstream::Context,
}

fn broker_error(e: impl ::std::fmt::Display) -> crate::Error {
    crate::Error::Broker(e.to_string())
}

fn not_confirmed(e: impl ::std::fmt::Display) -> crate::Error {
    crate::Error::NotConfirmed(e.to_string())
}

/// A header value: one line.
fn one_line(value: &str) -> ::std::string::String {
    value.replace(['\r', '\n'], " ")
}

fn header(
    headers: ::std::option::Option<&::async_nats::HeaderMap>,
    name: &str,
) -> ::std::option::Option<::std::string::String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

fn now_ms() -> i64 {
    ::chrono::Utc::now().timestamp_millis()
}

/// The event of a message: its header, else its subject.
fn event_of(
    headers: ::std::option::Option<&::async_nats::HeaderMap>,
    subject: &str,
) -> ::std::string::String {
    header(headers, H_EVENT).unwrap_or_else(|| {
        subject
            .strip_prefix(EXCHANGE)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
            .to_string()
    })
}

fn consumer_config(spec: &Spec, deliver_policy: DeliverPolicy) -> pull::Config {
    let max_deliver = if spec.durable == RETRY_DURABLE {
        MAX_DELIVER + 1
    } else {
        MAX_DELIVER
    };
    pull::Config {
        durable_name: Some(spec.durable.to_string()),
        filter_subject: spec.subject.to_string(),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        max_deliver,
        max_ack_pending: MAX_ACK_PENDING,
        ack_wait: ACK_WAIT,
        ..Default::default()
    }
}

impl Broker {
    /// Connect to `url`; fails when the server cannot be reached now.
    pub async fn connect(url: &str) -> ::std::result::Result<Self, crate::Error> {
        let client = ::async_nats::ConnectOptions::new()
            .name(crate::SERVICE)
            .connect(url)
            .await
            .map_err(broker_error)?;
        Ok(Broker {
            js: jetstream::new(client),
        })
    }

    /// Connect to the URL in [`URL_ENV`], or [`DEFAULT_URL`].
    pub async fn from_env() -> ::std::result::Result<Self, crate::Error> {
        let url = ::std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
        Self::connect(&url).await
    }

    /// Declare the events stream and, when this service consumes events,
    /// its dead-letter and retry streams and its durable consumers.
    /// Idempotent: existing streams are kept as they are.
    pub async fn declare_topology(&self) -> ::std::result::Result<(), crate::Error> {
        let events = self
            .js
            .get_or_create_stream(stream::Config {
                name: STREAM.to_string(),
                subjects: vec![format!("{EXCHANGE}.>")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                num_replicas: 1,
                max_age: MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(broker_error)?;
        if crate::CONSUMES.is_empty() {
            return Ok(());
        }
        self.js
            .get_or_create_stream(stream::Config {
                name: DLQ_STREAM.to_string(),
                subjects: vec![DLQ_SUBJECT.to_string()],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                num_replicas: 1,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(broker_error)?;
        let retry = self
            .js
            .get_or_create_stream(stream::Config {
                name: RETRY_STREAM.to_string(),
                subjects: vec![RETRY_SUBJECT.to_string()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                num_replicas: 1,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(broker_error)?;
        for spec in CONSUMERS {
            // `New`: like a queue binding, the consumer gets what is
            // published from now on, not the stream's history.
            let config = consumer_config(spec, DeliverPolicy::New);
            let _: PullConsumer = events.create_consumer(config).await.map_err(broker_error)?;
        }
        let _: PullConsumer = retry
            .create_consumer(consumer_config(&RETRY, DeliverPolicy::All))
            .await
            .map_err(broker_error)?;
        Ok(())
    }

    /// Send an envelope to its subject; the returned future resolves on
    /// the stream's PubAck.
    async fn send(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<PublishAckFuture, crate::Error> {
        let body = ::serde_json::to_vec(envelope)?;
        let message = PublishMessage::build()
            .payload(body.into())
            .message_id(&envelope.id)
            .header("Content-Type", CONTENT_TYPE);
        let subject = format!("{EXCHANGE}.{}", envelope.kind);
        self.js
            .send_publish(subject, message)
            .await
            .map_err(not_confirmed)
    }

    /// Publish an envelope and wait for the stream's PubAck.
    pub(crate) async fn publish(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<(), crate::Error> {
        self.send(envelope).await?.await.map_err(not_confirmed)?;
        Ok(())
    }

    /// Publish envelopes in order with their PubAcks pipelined: all are
    /// sent, then every ack is awaited. `Ok` only when all were stored; on
    /// error some may have been (a repeat within the duplicate window is
    /// dropped by the server).
    pub(crate) async fn publish_many(
        &self,
        envelopes: &[crate::Envelope],
    ) -> ::std::result::Result<(), crate::Error> {
        let mut acks = ::std::vec::Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            acks.push(self.send(envelope).await?);
        }
        for ack in acks {
            ack.await.map_err(not_confirmed)?;
        }
        Ok(())
    }

    /// Consume on one connection until `shutdown` resolves (`Ok`) or the
    /// connection fails (`Err`); [`crate::Subscriber`] reconnects.
    pub(crate) async fn consume_once<H: Handlers>(
        &self,
        dispatcher: &Arc<Dispatcher<H>>,
        mut shutdown: ::std::pin::Pin<&mut impl ::std::future::Future<Output = ()>>,
    ) -> ::std::result::Result<(), crate::Error> {
        let events = self.js.get_stream(STREAM).await.map_err(broker_error)?;
        let retry = self
            .js
            .get_stream(RETRY_STREAM)
            .await
            .map_err(broker_error)?;
        let mut sources = ::std::vec::Vec::new();
        let specs = CONSUMERS.iter().map(|s| (s, &events, DeliverPolicy::New));
        for (spec, stream, policy) in specs.chain([(&RETRY, &retry, DeliverPolicy::All)]) {
            // Created again in case it was deleted since start-up.
            let consumer: PullConsumer = stream
                .create_consumer(consumer_config(spec, policy))
                .await
                .map_err(broker_error)?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(PREFETCH)
                .messages()
                .await
                .map_err(broker_error)?;
            let messages = messages.map(move |m| m.map(|m| (spec, m)));
            sources.push(messages.boxed());
            ::tracing::debug!(event = spec.event, durable = spec.durable, "consumer ready");
        }
        let mut messages = ::futures_util::stream::select_all(sources);
        let permits = Arc::new(::tokio::sync::Semaphore::new(PREFETCH));
        ::tracing::info!(
            stream = STREAM,
            consumers = CONSUMERS.len(),
            prefetch = PREFETCH,
            "consuming"
        );
        let mut tasks = ::tokio::task::JoinSet::new();
        let result = loop {
            while tasks.try_join_next().is_some() {}
            let permit = ::tokio::select! {
                () = shutdown.as_mut() => break Ok(()),
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(e) => break Err(broker_error(e)),
                },
            };
            ::tokio::select! {
                () = shutdown.as_mut() => break Ok(()),
                next = messages.next() => match next {
                    Some(Ok((spec, message))) => {
                        tasks.spawn(handle(dispatcher.clone(), spec, message, permit));
                    }
                    Some(Err(e)) if matches!(e.kind(), pull::MessagesErrorKind::MissingHeartbeat) => {
                        // The stream asks again by itself.
                        ::tracing::warn!(error = %e, "missed consumer heartbeats");
                    }
                    Some(Err(e)) => break Err(broker_error(e)),
                    None => break Err(broker_error("the consumer stream ended")),
                },
            }
        };
        // Stop taking messages and finish the ones in flight. Messages
        // fetched but not handled are redelivered after their ack wait.
        drop(messages);
        while tasks.join_next().await.is_some() {}
        // Acks are queued on the connection: send them before returning.
        if let Err(e) = self.js.client().flush().await {
            ::tracing::warn!(error = %e, "could not flush the last acks; those messages will be redelivered");
        }
        result
    }

    /// Read up to `limit` dead letters without removing them.
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<::std::vec::Vec<DeadLetter>, crate::Error> {
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(broker_error)?;
        let last = stream.cached_info().state.last_sequence;
        let mut out = ::std::vec::Vec::new();
        let mut next = 1;
        while out.len() < limit {
            let Some(m) = dead_letter_from(&stream, next, last).await? else {
                break;
            };
            next = m.sequence + 1;
            let h = Some(&m.headers);
            out.push(DeadLetter {
                event: header(h, H_EVENT).unwrap_or_default(),
                reason: header(h, H_REASON).unwrap_or_default(),
                error: header(h, H_ERROR).unwrap_or_default(),
                attempts: header(h, H_ATTEMPT)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(1),
                first_failure: header(h, H_FIRST_FAILURE).unwrap_or_default(),
                body: m.payload.to_vec(),
            });
        }
        Ok(out)
    }

    /// Move up to `limit` dead letters to this service's retry stream,
    /// where they start again at attempt 1. Returns how many were moved.
    pub async fn replay_dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<usize, crate::Error> {
        let stream = self.js.get_stream(DLQ_STREAM).await.map_err(broker_error)?;
        // Dead letters stored from now on (a replayed one that fails again)
        // are left for the next call.
        let last = stream.cached_info().state.last_sequence;
        let mut moved = 0;
        let mut next = 1;
        while moved < limit {
            let Some(m) = dead_letter_from(&stream, next, last).await? else {
                break;
            };
            next = m.sequence + 1;
            let h = Some(&m.headers);
            let mut message = PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(format!("{DLQ_STREAM}-{}", m.sequence))
                .header("Content-Type", CONTENT_TYPE);
            for name in [H_EVENT, H_SUBJECT] {
                if let Some(value) = header(h, name) {
                    message = message.header(name, value);
                }
            }
            send(&self.js, RETRY_SUBJECT, message).await?;
            stream
                .delete_message(m.sequence)
                .await
                .map_err(broker_error)?;
            moved += 1;
        }
        Ok(moved)
    }
}

/// The first dead letter at or after stream sequence `from`, up to `last`.
async fn dead_letter_from(
    stream: &jetstream::stream::Stream,
    from: u64,
    last: u64,
) -> ::std::result::Result<::std::option::Option<jetstream::message::StreamMessage>, crate::Error> {
    match stream
        .get_first_raw_message_by_subject(DLQ_SUBJECT, from)
        .await
    {
        Ok(m) if m.sequence <= last => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(broker_error(e)),
    }
}

/// Publish and wait for the stream's PubAck.
async fn send(
    js: &jetstream::Context,
    subject: &'static str,
    message: PublishMessage,
) -> ::std::result::Result<(), crate::Error> {
    js.send_publish(subject, message)
        .await
        .map_err(not_confirmed)?
        .await
        .map_err(not_confirmed)?;
    Ok(())
}

/// Handle one message and settle it.
async fn handle<H: Handlers>(
    dispatcher: Arc<Dispatcher<H>>,
    spec: &'static Spec,
    message: jetstream::Message,
    permit: ::tokio::sync::OwnedSemaphorePermit,
) {
    let (delivered, stream_sequence, published) = match message.info() {
        Ok(info) => (info.delivered, info.stream_sequence, info.published),
        Err(e) => {
            ::tracing::warn!(subject = %message.subject, error = %e, "not a JetStream message; ignored");
            return;
        }
    };
    let headers = message.headers.as_ref();
    let retried = spec.durable == RETRY_DURABLE;
    if retried
        && let Some(due) = header(headers, H_DUE).and_then(|d| d.parse::<i64>().ok())
        && due > now_ms()
    {
        // Not due yet: the server holds it for the rest of its delay.
        let wait = u64::try_from(due - now_ms()).unwrap_or_default();
        let nak = AckKind::Nak(Some(Duration::from_millis(wait)));
        if let Err(e) = message.ack_with(nak).await {
            ::tracing::warn!(error = %e, "nak failed; the server will redeliver");
        }
        return;
    }
    // A retry carries its attempt; a first delivery counts redeliveries
    // after crashes as attempts.
    let attempt = match header(headers, H_ATTEMPT) {
        Some(a) if retried => a.parse().unwrap_or(1),
        _ => u32::try_from(delivered).unwrap_or(1).max(1),
    };
    let max_deliver = if retried {
        MAX_DELIVER + 1
    } else {
        MAX_DELIVER
    };
    let outcome = if delivered >= max_deliver {
        // The server's last delivery: the earlier ones were neither acked
        // nor NAKed, so the handler crashed or hung on each of them.
        let error = format!("delivered {delivered} times without being settled");
        if spec.dead_letter {
            Outcome::DeadLetter {
                reason: Reason::Exhausted,
                error,
            }
        } else {
            Outcome::Discard {
                reason: Reason::Exhausted,
                error,
            }
        }
    } else {
        // Push the ack deadline back while the handler runs.
        let progress = || async {
            let _ = message.ack_with(AckKind::Progress).await;
        };
        dispatcher
            .dispatch_keeping(&message.payload, attempt, PROGRESS_EVERY, progress)
            .await
    };
    // What only a failure needs (names, times, forward) is worked out
    // only for one.
    let event = || event_of(headers, message.subject.as_str());
    let forward = match &outcome {
        Outcome::Ack => None,
        Outcome::Retry {
            delay_ms,
            next_attempt,
            error,
        } => {
            ::tracing::warn!(event = %event(), attempt, delay_ms, %error, "handler failed; retrying");
            let due = now_ms().saturating_add(i64::try_from(*delay_ms).unwrap_or(i64::MAX));
            let message = PublishMessage::build()
                .header(H_ATTEMPT, next_attempt.to_string())
                .header(H_DUE, due.to_string())
                .header(H_ERROR, one_line(error));
            Some((RETRY_SUBJECT, message))
        }
        Outcome::DeadLetter { reason, error } => {
            ::tracing::error!(event = %event(), attempt, reason = reason.as_str(), %error, "dead-lettered");
            let message = PublishMessage::build()
                .header(H_ATTEMPT, attempt.to_string())
                .header(H_REASON, reason.as_str())
                .header(H_ERROR, one_line(error));
            Some((DLQ_SUBJECT, message))
        }
        Outcome::Discard { reason, error } => {
            ::tracing::error!(event = %event(), attempt, reason = reason.as_str(), %error, "discarded");
            None
        }
    };
    if let Some((to, forward)) = forward {
        let first_failure = header(headers, H_FIRST_FAILURE).unwrap_or_else(|| {
            // Redelivered after crashes: it first failed about when the
            // stream stored it, unless the consumer lagged.
            if delivered > 1 {
                let nanos = published.unix_timestamp_nanos();
                ::chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or_default())
            } else {
                ::chrono::Utc::now()
            }
            .to_rfc3339()
        });
        let subject = header(headers, H_SUBJECT).unwrap_or_else(|| message.subject.to_string());
        let stream = message.info().map(|i| i.stream).unwrap_or_default();
        // The id makes a forward repeated after a crash count once.
        let forward = forward
            .payload(message.payload.clone())
            .message_id(format!("{stream}-{stream_sequence}-{attempt}"))
            .header("Content-Type", CONTENT_TYPE)
            .header(H_EVENT, one_line(&event()))
            .header(H_SUBJECT, subject)
            .header(H_FIRST_FAILURE, first_failure);
        // Boxed: only a failure forwards, and a publish is a large future
        // that every message's task would otherwise carry.
        if let Err(e) = ::std::boxed::Box::pin(send(&message.context, to, forward)).await {
            // Not forwarded: have it redelivered rather than lose it.
            ::tracing::warn!(event = %event(), error = %e, "could not forward the message; redelivering");
            let delay = RETRY_DELAYS_MS.first().copied().unwrap_or(1_000);
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(delay))))
                .await;
            return;
        }
    }
    // The slot is free once the handler's work is done; the ack itself is
    // queued on the connection (flushed when the consumer stops). An ack
    // that never reaches the server means a redelivery, which the inbox
    // (or an idempotent handler) absorbs; waiting for the server's
    // confirmation here cut the consume rate by more than half.
    drop(permit);
    if let Err(e) = message.ack().await {
        ::tracing::warn!(event = %event(), error = %e, "ack failed; the server will redeliver");
    }
}
