{{ header }}
//! Kafka transport (rdkafka with its bundled librdkafka).
//!
//! Each event goes to the topic of its entity (`<exchange>.<entity>` by
//! default), keyed by its ordering key, as a CloudEvents structured-mode
//! message (`content-type: application/cloudevents+json`, the envelope as
//! value). The producer is idempotent with `acks=all`; a publish returns
//! after the broker's delivery report. Topics are created at start-up with
//! the catalog's partition counts.
//!
//! This service consumes in the consumer group named after it, with
//! auto-commit off: an offset is committed only when every message before
//! it in its partition is settled (handled, or forwarded to the retry or
//! dead-letter topic), so a crash redelivers rather than loses. Messages of
//! one key are handled one after another, different keys concurrently.
//!
//! A retry goes to the topic `<service>.retry` with its attempt and due
//! time in headers; when read back before it is due, it waits in memory,
//! holding back only the commits of its own partition. Dead letters go to
//! `<service>.dlq`; the consumer group `<service>.dlq-replay` remembers
//! which of them were replayed.

use crate::subscriber::{DeadLetter, Dispatcher, Handlers, Outcome, RETRY_DELAYS_MS, Reason};
use ::futures_util::FutureExt as _;
use ::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use ::rdkafka::client::{ClientContext, DefaultClientContext};
use ::rdkafka::config::ClientConfig;
use ::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use ::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use ::rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use ::rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use ::rdkafka::{Offset, TopicPartitionList};
use ::std::collections::{BTreeSet, HashMap, VecDeque};
use ::std::sync::{Arc, Mutex};
use ::std::time::Duration;

/// Environment variable with the bootstrap servers (`host:port,…`).
pub const URL_ENV: &str = "KAFKA_BROKERS";
/// The servers used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "127.0.0.1:9092";
/// Environment variable with the replication factor of the topics created
/// at start-up (default 1).
pub const REPLICATION_ENV: &str = "KAFKA_REPLICATION_FACTOR";
/// Prefix of environment variables with extra librdkafka properties for
/// every client of this service (TLS, SASL, tuning): the rest of the name,
/// lowercased, with `_` read as `.`, is the property, so
/// `KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`. They
/// cannot change what the delivery guarantees rest on (acks, idempotence,
/// the consumer group, manual commits).
pub const CONFIG_ENV_PREFIX: &str = "KAFKA_CONFIG_";

/// The topic of each event this service produces or consumes.
#[rustfmt::skip]
const TOPICS: &[(&str, &str)] = &[{{ topics }}];

/// Topics created at start-up, with their partition counts.
#[rustfmt::skip]
const CREATED: &[(&str, i32)] = &[{{ created }}];

/// The topics of the events this service consumes.
#[rustfmt::skip]
const CONSUMED: &[&str] = &[{{ consumed_topics }}];

/// Retries (and replayed dead letters) of this service.
const RETRY_TOPIC: &str = {{ retry_lit }};
/// This service's dead-letter topic.
const DLQ_TOPIC: &str = {{ dlq_lit }};
/// Partitions of the retry and dead-letter topics.
const OWN_PARTITIONS: i32 = {{ own_partitions }};
/// Messages handled at once at most (waiting behind another message of
/// their key included).
const PREFETCH: usize = {{ prefetch }};
/// Retries read before they are due, kept in memory at most.
const MAX_DELAYED: usize = 10_000;
/// A handler that panics is retried; this many attempts at most.
const MAX_PANICS: u32 = 5;
/// How long the producer tries to deliver a message before it fails.
const DELIVERY_TIMEOUT_MS: &str = "30000";
/// Consumer group liveness: a crashed member's partitions move after this.
const SESSION_TIMEOUT_MS: &str = "6000";
const HEARTBEAT_INTERVAL_MS: &str = "500";
/// Settled offsets are committed this often (and on rebalance and
/// shutdown): after a crash, at most this much settled work is redone.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Admin and metadata requests.
const TIMEOUT: Duration = Duration::from_secs(10);

const CONTENT_TYPE: &str = "application/cloudevents+json";
const H_CONTENT_TYPE: &str = "content-type";
const H_EVENT: &str = "evgen-event";
const H_TOPIC: &str = "evgen-topic";
const H_ATTEMPT: &str = "evgen-attempt";
const H_DUE: &str = "evgen-due";
const H_REASON: &str = "evgen-reason";
const H_ERROR: &str = "evgen-error";
const H_FIRST_FAILURE: &str = "evgen-first-failure";

/// A connection to Kafka, shared by the publisher and the subscriber.
///
/// Cheap to clone. librdkafka reconnects on its own.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: ::std::string::String,
    producer: FutureProducer,
}

impl ::std::convert::From<KafkaError> for crate::Error {
    fn from(e: KafkaError) -> Self {
        crate::Error::Broker(e.to_string())
    }
}

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", crate::SERVICE);
    let mut extra: ::std::vec::Vec<(::std::string::String, ::std::string::String)> =
        ::std::env::vars_os()
            .filter_map(|(name, value)| {
                let property = name.to_str()?.strip_prefix(CONFIG_ENV_PREFIX)?;
                Some((
                    property.to_ascii_lowercase().replace('_', "."),
                    value.into_string().ok()?,
                ))
            })
            .collect();
    extra.sort();
    for (property, value) in extra {
        config.set(property, value);
    }
    config
}

fn now_ms() -> i64 {
    ::chrono::Utc::now().timestamp_millis()
}

/// The topic of an event.
fn topic(event: &str) -> ::std::result::Result<&'static str, crate::Error> {
    TOPICS
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, t)| *t)
        .ok_or_else(|| crate::Error::UnknownEvent(event.to_string()))
}

fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, &(key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

fn header(
    message: &impl ::rdkafka::message::Message,
    name: &str,
) -> ::std::option::Option<::std::string::String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| ::std::string::String::from_utf8_lossy(v).into_owned())
}

fn record<'a>(
    topic: &'a str,
    key: ::std::option::Option<&'a [u8]>,
    body: &'a [u8],
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let record = FutureRecord::to(topic).payload(body).headers(headers);
    match key {
        Some(key) => record.key(key),
        None => record,
    }
}

fn not_confirmed(e: impl ::std::fmt::Display) -> crate::Error {
    crate::Error::NotConfirmed(e.to_string())
}

/// The `type` of a CloudEvents envelope.
#[derive(::serde::Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: ::std::string::String,
}

impl Broker {
    /// Connect to `url` (bootstrap servers); fails when no broker answers
    /// now.
    pub async fn connect(url: &str) -> ::std::result::Result<Self, crate::Error> {
        let mut config = config(url);
        // A publish returns once its batch is confirmed: lingering after the
        // last message of a `_batch` call only delays it. 1 ms (librdkafka's
        // default is 5) still groups what concurrent publishers send.
        if config.get("linger.ms").is_none() {
            config.set("linger.ms", "1");
        }
        if config.get("message.timeout.ms").is_none() {
            config.set("message.timeout.ms", DELIVERY_TIMEOUT_MS);
        }
        let producer: FutureProducer = config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        // librdkafka connects lazily: ask for metadata to fail now.
        let probe = producer.clone();
        ::tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
        })
        .await
        .map_err(|e| crate::Error::Broker(e.to_string()))??;
        Ok(Broker {
            inner: Arc::new(Inner {
                brokers: url.to_string(),
                producer,
            }),
        })
    }

    /// Connect to the servers in [`URL_ENV`], or [`DEFAULT_URL`].
    pub async fn from_env() -> ::std::result::Result<Self, crate::Error> {
        let url = ::std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
        Self::connect(&url).await
    }

    /// Create the topics this service uses (and its retry and dead-letter
    /// topics when it consumes), with the catalog's partition counts and
    /// the replication factor of [`REPLICATION_ENV`]. Existing topics are
    /// kept as they are.
    pub async fn declare_topology(&self) -> ::std::result::Result<(), crate::Error> {
        let admin: AdminClient<DefaultClientContext> = config(&self.inner.brokers).create()?;
        let replication = ::std::env::var(REPLICATION_ENV)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let mut topics = CREATED.to_vec();
        if !crate::CONSUMES.is_empty() {
            topics.push((RETRY_TOPIC, OWN_PARTITIONS));
            topics.push((DLQ_TOPIC, OWN_PARTITIONS));
        }
        let new: ::std::vec::Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions)| {
                NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        for created in admin.create_topics(&new, &options).await? {
            match created {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(crate::Error::Broker(format!(
                        "cannot create topic `{topic}`: {code}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Publish an envelope to its event's topic, keyed by its ordering key,
    /// and wait for the delivery report.
    pub(crate) async fn publish(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<(), crate::Error> {
        let topic = topic(&envelope.kind)?;
        let body = ::serde_json::to_vec(envelope)?;
        let key = envelope.partitionkey.as_deref().map(str::as_bytes);
        let headers = headers(&[(H_CONTENT_TYPE, CONTENT_TYPE)]);
        self.inner
            .producer
            .send(record(topic, key, &body, headers), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| not_confirmed(e))?;
        Ok(())
    }

    /// Publish envelopes in order with their delivery reports pipelined:
    /// all are queued, then every report is awaited. `Ok` only when all
    /// were delivered; on error some may have been.
    pub(crate) async fn publish_many(
        &self,
        envelopes: &[crate::Envelope],
    ) -> ::std::result::Result<(), crate::Error> {
        // librdkafka copies the payload when a record is queued: one
        // buffer serves every body.
        let mut body = ::std::vec::Vec::with_capacity(512);
        let mut reports = ::std::vec::Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let topic = topic(&envelope.kind)?;
            body.clear();
            ::serde_json::to_writer(&mut body, envelope)?;
            let key = envelope.partitionkey.as_deref().map(str::as_bytes);
            let headers = headers(&[(H_CONTENT_TYPE, CONTENT_TYPE)]);
            let mut next = record(topic, key, &body, headers);
            loop {
                match self.inner.producer.send_result(next) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        next = back;
                        ::tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(not_confirmed(e)),
                }
            }
        }
        for report in reports {
            match report.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(not_confirmed(e)),
                Err(e) => return Err(not_confirmed(e)),
            }
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
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let consumer: StreamConsumer<Committer> = config(&self.inner.brokers)
            .set("group.id", crate::SERVICE)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS)
            .create_with_context(Committer {
                tracker: tracker.clone(),
            })?;
        let topics: ::std::vec::Vec<&str> = CONSUMED.iter().copied().chain([RETRY_TOPIC]).collect();
        consumer.subscribe(&topics)?;
        ::tracing::info!(
            ?topics,
            group = crate::SERVICE,
            prefetch = PREFETCH,
            "consuming"
        );
        let mut run = Run {
            dispatcher: dispatcher.clone(),
            broker: self.clone(),
            tracker: tracker.clone(),
            permits: Arc::new(::tokio::sync::Semaphore::new(PREFETCH)),
            keys: HashMap::new(),
            tasks: ::tokio::task::JoinSet::new(),
            stop: ::tokio::sync::watch::channel(false).0,
        };
        let delayed_slots = Arc::new(::tokio::sync::Semaphore::new(MAX_DELAYED));
        let (due_tx, mut due_rx) = ::tokio::sync::mpsc::unbounded_channel();
        let mut delayed = ::tokio::task::JoinSet::new();
        let mut commits = ::tokio::time::interval(COMMIT_EVERY);
        commits.set_missed_tick_behavior(::tokio::time::MissedTickBehavior::Delay);
        loop {
            let free = run.permits.available_permits() > 0;
            let room = delayed_slots.available_permits() > 0;
            ::tokio::select! {
                () = shutdown.as_mut() => break,
                _ = commits.tick() => commit(&consumer, &tracker, CommitMode::Async),
                Some(done) = run.tasks.join_next(), if !run.tasks.is_empty() => {
                    if let Ok(Some(key)) = done {
                        run.next_of(key);
                    }
                }
                Some(_) = delayed.join_next(), if !delayed.is_empty() => {}
                Some((message, epoch)) = due_rx.recv(), if free => run.accept(message, epoch),
                received = consumer.recv(), if free && room => match received {
                    Ok(message) => {
                        let message = message.detach();
                        let epoch = lock(&tracker).start(&message);
                        let due = header(&message, H_DUE).and_then(|d| d.parse::<i64>().ok());
                        match due {
                            Some(due) if due > now_ms() => {
                                // A retry read before it is due: wait without
                                // a handling slot, then queue it.
                                match delayed_slots.clone().try_acquire_owned() {
                                    Ok(slot) => {
                                        let due_tx = due_tx.clone();
                                        delayed.spawn(async move {
                                            let wait = u64::try_from(due - now_ms()).unwrap_or_default();
                                            ::tokio::time::sleep(Duration::from_millis(wait)).await;
                                            let _ = due_tx.send((message, epoch));
                                            drop(slot);
                                        });
                                    }
                                    Err(_) => run.accept(message, epoch),
                                }
                            }
                            _ => run.accept(message, epoch),
                        }
                    }
                    Err(e) => {
                        // librdkafka recovers from broker errors on its own.
                        ::tracing::warn!(error = %e, "consumer error");
                        ::tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Stop taking messages: drop the waiting ones (their offsets stay
        // uncommitted, so they are read again), finish the ones in flight,
        // commit, leave the group.
        let _ = run.stop.send(true);
        delayed.abort_all();
        run.keys.clear();
        while run.tasks.join_next().await.is_some() {}
        commit(&consumer, &tracker, CommitMode::Sync);
        consumer.unsubscribe();
        Ok(())
    }

    /// Read up to `limit` dead letters (those not replayed yet) without
    /// removing them.
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<::std::vec::Vec<DeadLetter>, crate::Error> {
        let brokers = self.inner.brokers.clone();
        ::tokio::task::spawn_blocking(move || {
            let mut out = ::std::vec::Vec::new();
            read_dead_letters(&brokers, limit, false, |m| {
                out.push(DeadLetter {
                    event: header(m, H_EVENT).unwrap_or_default(),
                    reason: header(m, H_REASON).unwrap_or_default(),
                    error: header(m, H_ERROR).unwrap_or_default(),
                    attempts: header(m, H_ATTEMPT)
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(1),
                    first_failure: header(m, H_FIRST_FAILURE).unwrap_or_default(),
                    body: m.payload().unwrap_or_default().to_vec(),
                });
                Ok(())
            })?;
            Ok(out)
        })
        .await
        .map_err(|e| crate::Error::Broker(e.to_string()))?
    }

    /// Move up to `limit` dead letters to this service's retry topic, where
    /// they start again at attempt 1; the replay group's committed offsets
    /// mark them replayed. Returns how many were moved.
    pub async fn replay_dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<usize, crate::Error> {
        let brokers = self.inner.brokers.clone();
        let producer = self.inner.producer.clone();
        let runtime = ::tokio::runtime::Handle::current();
        ::tokio::task::spawn_blocking(move || {
            read_dead_letters(&brokers, limit, true, |m| {
                let mut pairs = vec![(H_CONTENT_TYPE, CONTENT_TYPE.to_string())];
                for name in [H_EVENT, H_TOPIC] {
                    if let Some(value) = header(m, name) {
                        pairs.push((name, value));
                    }
                }
                let pairs: ::std::vec::Vec<(&str, &str)> =
                    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let body = m.payload().unwrap_or_default();
                let sent = producer.send(
                    record(RETRY_TOPIC, m.key(), body, headers(&pairs)),
                    Duration::from_secs(5),
                );
                runtime.block_on(sent).map_err(|(e, _)| not_confirmed(e))?;
                Ok(())
            })
        })
        .await
        .map_err(|e| crate::Error::Broker(e.to_string()))?
    }
}

/// Read the dead letters after the replay group's committed offsets, up to
/// the end of each partition as it is now, calling `each` on up to `limit`
/// of them in order. When they are `moves`, the offsets after the last one
/// in each partition are committed for the replay group.
/// Blocking.
fn read_dead_letters(
    brokers: &str,
    limit: usize,
    moves: bool,
    mut each: impl FnMut(
        &::rdkafka::message::BorrowedMessage<'_>,
    ) -> ::std::result::Result<(), crate::Error>,
) -> ::std::result::Result<usize, crate::Error> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", format!("{}.dlq-replay", crate::SERVICE))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(DLQ_TOPIC), TIMEOUT)?;
    let mut wanted = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            wanted.add_partition(DLQ_TOPIC, p.id());
        }
    }
    let committed = consumer.committed_offsets(wanted.clone(), TIMEOUT)?;
    let mut start = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in wanted.elements() {
        let (low, high) = consumer.fetch_watermarks(DLQ_TOPIC, p.partition(), TIMEOUT)?;
        let from = match committed
            .find_partition(DLQ_TOPIC, p.partition())
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        if from < high {
            start.add_partition_offset(DLQ_TOPIC, p.partition(), Offset::Offset(from))?;
            ends.insert(p.partition(), high);
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&start)?;
    let mut moved = HashMap::new();
    let mut seen = 0;
    let deadline = ::std::time::Instant::now() + TIMEOUT;
    let mut result = Ok(());
    while seen < limit && !ends.is_empty() && ::std::time::Instant::now() < deadline {
        let m = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => {
                result = Err(e.into());
                break;
            }
            Some(Ok(m)) => m,
        };
        let Some(high) = ends.get(&m.partition()).copied() else {
            continue;
        };
        if m.offset() >= high {
            ends.remove(&m.partition());
            continue;
        }
        if let Err(e) = each(&m) {
            result = Err(e);
            break;
        }
        seen += 1;
        moved.insert(m.partition(), m.offset() + 1);
        if m.offset() + 1 >= high {
            ends.remove(&m.partition());
        }
    }
    if moves && !moved.is_empty() {
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in moved {
            offsets.add_partition_offset(DLQ_TOPIC, partition, Offset::Offset(offset))?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;
    }
    result.map(|()| seen)
}

fn lock(tracker: &Mutex<Tracker>) -> ::std::sync::MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(::std::sync::PoisonError::into_inner)
}

/// Commit the offsets that advanced since the last commit.
fn commit(consumer: &StreamConsumer<Committer>, tracker: &Mutex<Tracker>, mode: CommitMode) {
    let due = lock(tracker).due();
    if due.count() > 0
        && let Err(e) = consumer.commit(&due, mode)
    {
        ::tracing::warn!(error = %e, "offset commit failed");
    }
}

/// Messages read and not yet settled, per partition.
#[derive(Default)]
struct Tracker {
    parts: HashMap<(::std::string::String, i32), Part>,
    epochs: u64,
}

struct Part {
    /// Changes when the partition is assigned again: settlements of
    /// messages read before are ignored.
    epoch: u64,
    in_flight: BTreeSet<i64>,
    /// The offset after the last message read.
    next: i64,
    committed: i64,
}

impl Part {
    /// The offset to commit: the first message not settled.
    fn safe(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }
}

impl Tracker {
    fn start(&mut self, m: &OwnedMessage) -> u64 {
        let epochs = &mut self.epochs;
        let part = self
            .parts
            .entry((m.topic().to_string(), m.partition()))
            .or_insert_with(|| {
                *epochs += 1;
                Part {
                    epoch: *epochs,
                    in_flight: BTreeSet::new(),
                    next: m.offset(),
                    committed: m.offset(),
                }
            });
        part.in_flight.insert(m.offset());
        part.next = part.next.max(m.offset() + 1);
        part.epoch
    }

    fn live(&self, m: &OwnedMessage, epoch: u64) -> bool {
        self.parts
            .get(&(m.topic().to_string(), m.partition()))
            .is_some_and(|p| p.epoch == epoch)
    }

    fn finish(&mut self, m: &OwnedMessage, epoch: u64) {
        if let Some(part) = self.parts.get_mut(&(m.topic().to_string(), m.partition()))
            && part.epoch == epoch
        {
            part.in_flight.remove(&m.offset());
        }
    }

    fn due(&mut self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), part) in &mut self.parts {
            let safe = part.safe();
            if safe > part.committed {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(safe));
                part.committed = safe;
            }
        }
        tpl
    }

    /// Forget revoked partitions; returns their offsets to commit.
    fn revoke(&mut self, revoked: &TopicPartitionList) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for e in revoked.elements() {
            if let Some(part) = self.parts.remove(&(e.topic().to_string(), e.partition()))
                && part.safe() > part.committed
            {
                let _ =
                    tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(part.safe()));
            }
        }
        tpl
    }
}

/// Commits what was settled before partitions are taken away.
struct Committer {
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for Committer {}

impl ConsumerContext for Committer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let due = lock(&self.tracker).revoke(revoked);
            if due.count() > 0
                && let Err(e) = consumer.commit(&due, CommitMode::Sync)
            {
                ::tracing::warn!(error = %e, "offset commit before rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                ::tracing::info!(partitions = assigned.count(), "partitions assigned");
            }
            Rebalance::Revoke(revoked) => {
                ::tracing::info!(partitions = revoked.count(), "partitions revoked");
            }
            Rebalance::Error(e) => ::tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// A message with its handling slot.
struct Job {
    message: OwnedMessage,
    epoch: u64,
    /// A handling slot, free again when the job is dropped.
    _permit: ::tokio::sync::OwnedSemaphorePermit,
}

/// The consumer loop's state.
struct Run<H> {
    dispatcher: Arc<Dispatcher<H>>,
    broker: Broker,
    tracker: Arc<Mutex<Tracker>>,
    permits: Arc<::tokio::sync::Semaphore>,
    /// Keys with a message in flight, and the messages waiting behind it.
    keys: HashMap<::std::vec::Vec<u8>, VecDeque<Job>>,
    tasks: ::tokio::task::JoinSet<::std::option::Option<::std::vec::Vec<u8>>>,
    stop: ::tokio::sync::watch::Sender<bool>,
}

impl<H: Handlers> Run<H> {
    /// Take a message: handle it now, or after the one of its key in flight.
    fn accept(&mut self, message: OwnedMessage, epoch: u64) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return;
        };
        let job = Job {
            message,
            epoch,
            _permit: permit,
        };
        match job.message.key().map(<[u8]>::to_vec) {
            Some(key) => match self.keys.get_mut(&key) {
                Some(waiting) => waiting.push_back(job),
                None => {
                    if self.spawn(job) {
                        self.keys.insert(key, VecDeque::new());
                    }
                }
            },
            None => {
                self.spawn(job);
            }
        }
    }

    /// The message of `key` in flight is settled: start the next one.
    fn next_of(&mut self, key: ::std::vec::Vec<u8>) {
        let Some(waiting) = self.keys.get_mut(&key) else {
            return;
        };
        let mut waiting = ::std::mem::take(waiting);
        while let Some(job) = waiting.pop_front() {
            if self.spawn(job) {
                self.keys.insert(key, waiting);
                return;
            }
        }
        self.keys.remove(&key);
    }

    /// Start handling a message; `false` when its partition was revoked
    /// meanwhile (another member reads it again).
    fn spawn(&mut self, job: Job) -> bool {
        if !lock(&self.tracker).live(&job.message, job.epoch) {
            return false;
        }
        self.tasks.spawn(handle(
            self.dispatcher.clone(),
            self.broker.clone(),
            self.tracker.clone(),
            job,
            self.stop.subscribe(),
        ));
        true
    }
}

/// Handle one message and settle it; returns its key.
async fn handle<H: Handlers>(
    dispatcher: Arc<Dispatcher<H>>,
    broker: Broker,
    tracker: Arc<Mutex<Tracker>>,
    job: Job,
    mut stop: ::tokio::sync::watch::Receiver<bool>,
) -> ::std::option::Option<::std::vec::Vec<u8>> {
    let m = &job.message;
    let key = m.key().map(<[u8]>::to_vec);
    let body = m.payload().unwrap_or_default();
    let retried = m.topic() == RETRY_TOPIC;
    let kind = ::serde_json::from_slice::<Kind>(body).ok().map(|k| k.kind);
    if !retried
        && let Some(kind) = &kind
        && !crate::CONSUMES.contains(&kind.as_str())
    {
        // Another event of the same topic: not for this service.
        lock(&tracker).finish(m, job.epoch);
        return key;
    }
    let attempt: u32 = header(m, H_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let event = header(m, H_EVENT).or(kind).unwrap_or_default();
    let origin = header(m, H_TOPIC).unwrap_or_else(|| m.topic().to_string());
    let dispatch = ::std::panic::AssertUnwindSafe(dispatcher.dispatch(body, attempt));
    let outcome = match dispatch.catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) if attempt >= MAX_PANICS => Outcome::DeadLetter {
            reason: Reason::Exhausted,
            error: format!("the handler panicked on {attempt} attempts"),
        },
        Err(_) => Outcome::Retry {
            delay_ms: RETRY_DELAYS_MS.first().copied().unwrap_or(1_000),
            next_attempt: attempt + 1,
            error: "the handler panicked".to_string(),
        },
    };
    let first_failure =
        header(m, H_FIRST_FAILURE).unwrap_or_else(|| ::chrono::Utc::now().to_rfc3339());
    let attempt_text = attempt.to_string();
    let mut pairs: ::std::vec::Vec<(&str, ::std::string::String)> = vec![
        (H_CONTENT_TYPE, CONTENT_TYPE.to_string()),
        (H_EVENT, event.clone()),
        (H_TOPIC, origin),
        (H_FIRST_FAILURE, first_failure),
    ];
    let to = match &outcome {
        Outcome::Ack => None,
        Outcome::Retry {
            delay_ms,
            next_attempt,
            error,
        } => {
            ::tracing::warn!(%event, attempt, delay_ms, %error, "handler failed; retrying");
            let due = now_ms().saturating_add(i64::try_from(*delay_ms).unwrap_or(i64::MAX));
            pairs.push((H_ATTEMPT, next_attempt.to_string()));
            pairs.push((H_DUE, due.to_string()));
            pairs.push((H_ERROR, error.clone()));
            Some(RETRY_TOPIC)
        }
        Outcome::DeadLetter { reason, error } => {
            ::tracing::error!(%event, attempt, reason = reason.as_str(), %error, "dead-lettered");
            pairs.push((H_ATTEMPT, attempt_text));
            pairs.push((H_REASON, reason.as_str().to_string()));
            pairs.push((H_ERROR, error.clone()));
            Some(DLQ_TOPIC)
        }
        Outcome::Discard { reason, error } => {
            ::tracing::error!(%event, attempt, reason = reason.as_str(), %error, "discarded");
            None
        }
    };
    if let Some(to) = to {
        let pairs: ::std::vec::Vec<(&str, &str)> =
            pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = broker
                .inner
                .producer
                .send(
                    record(to, m.key(), body, headers(&pairs)),
                    Duration::from_secs(5),
                )
                .await;
            match sent {
                Ok(_) => break,
                Err((e, _)) => {
                    // Not forwarded: keep trying; on shutdown leave it
                    // unsettled, so it is read again.
                    ::tracing::warn!(%event, error = %e, "could not forward the message; trying again");
                    if *stop.borrow() {
                        return key;
                    }
                    ::tokio::select! {
                        () = ::tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return key,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    lock(&tracker).finish(m, job.epoch);
    key
}
