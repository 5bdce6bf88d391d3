{{ header }}
//! Redis Streams transport (redis).
//!
//! Each event goes to the stream of its topic (`<exchange>.<entity>` by
//! default), trimmed to about [`MAXLEN`] entries. This service reads the
//! streams of the events it consumes through its consumer group (named
//! after the service); it acks an entry (XACK) only after its handler, or
//! the forward to a retry or dead-letter destination, succeeded. Entries
//! left pending by a consumer that crashed are taken over with XAUTOCLAIM.
//!
//! Retries wait in a sorted set of this service, scored by due time; a
//! Lua script moves due ones atomically to this service's retry stream,
//! which the consumer group reads too. Dead letters go to the stream
//! `<service>.dlq`. Forwarding and acking happen in one MULTI/EXEC.

use crate::subscriber::{DeadLetter, Dispatcher, Handlers, Outcome, RETRY_DELAYS_MS, Reason};
use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use ::std::sync::Arc;
use ::std::time::Duration;

/// Environment variable with the server URL (`redis://` or `rediss://`).
pub const URL_ENV: &str = "REDIS_URL";
/// The URL used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The stream of each event this service produces or consumes.
#[rustfmt::skip]
const TOPICS: &[(&str, &str)] = &[{{ topics }}];

/// The streams this service's consumer group reads, its retry stream aside.
#[rustfmt::skip]
const STREAMS: &[&str] = &[{{ consumed_streams }}];

/// Retried and replayed entries, read by this service only.
const RETRY_STREAM: &str = {{ retry_lit }};
/// Sorted set of retries waiting for their delay, scored by due time (ms).
const DELAYED: &str = {{ delayed_lit }};
/// This service's dead-letter stream.
const DLQ: &str = {{ dlq_lit }};
/// Entries handled at once at most.
const PREFETCH: usize = {{ prefetch }};
/// Streams are trimmed to about this many entries (`MAXLEN ~`), so a
/// consumer group that lags further than that loses the oldest entries.
pub const MAXLEN: u64 = {{ maxlen }};
/// An entry pending this long is taken over by another consumer: the one
/// that read it crashed. Running handlers keep their entries fresh.
const CLAIM_IDLE_MS: u64 = 60_000;
/// A consumer (a running instance reads every [`BLOCK_MS`]) idle this long
/// with nothing pending is removed from the group.
const FORGET_IDLE_MS: u64 = 600_000;
/// How often pending entries are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(15);
/// An entry delivered this many times without being settled (its handler
/// crashed or hung every time) is dead-lettered without running it again.
const MAX_DELIVERIES: u64 = 5;
/// How long one XREADGROUP waits for entries.
const BLOCK_MS: u64 = 1_000;

const CONTENT_TYPE: &str = "application/cloudevents+json";
const F_TYPE: &str = "type";
const F_ID: &str = "id";
const F_KEY: &str = "partitionkey";
const F_CONTENT_TYPE: &str = "content-type";
const F_BODY: &str = "body";
const F_STREAM: &str = "stream";
const F_ENTRY: &str = "entry";
const F_ATTEMPT: &str = "attempt";
const F_FIRST_FAILURE: &str = "first_failure";
const F_REASON: &str = "reason";
const F_ERROR: &str = "error";

/// Moves due retries (at most ARGV[2]) from the sorted set KEYS[1] to the
/// stream KEYS[2], atomically. A member is a JSON array of field, value.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(cjson.decode(member)))
    redis.call('ZREM', KEYS[1], member)
end
return #due
";

/// Removes from group ARGV[1] of stream KEYS[1] the consumers other than
/// ARGV[3] idle longer than ARGV[2] ms with nothing pending, atomically (a
/// consumer's pending entries would be lost with it).
const FORGET: &str = r"
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local f = {}
    for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
    if f.pending == 0 and f.idle > tonumber(ARGV[2]) and f.name ~= ARGV[3] then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)
        gone = gone + 1
    end
end
return gone
";

/// A connection to Redis, shared by the publisher and the subscriber.
///
/// Cheap to clone. When the connection drops, the next operation opens a
/// new one; the subscriber reconnects with backoff on its own.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    client: ::redis::Client,
    /// This instance's name in the consumer group.
    consumer: ::std::string::String,
    /// Held only to clone or swap the connection, never across an await.
    shared: ::std::sync::Mutex<::std::option::Option<MultiplexedConnection>>,
}

impl ::std::convert::From<::redis::RedisError> for crate::Error {
    fn from(e: ::redis::RedisError) -> Self {
        crate::Error::Broker(e.to_string())
    }
}

fn now_ms() -> i64 {
    ::chrono::Utc::now().timestamp_millis()
}

fn text(entry: &StreamId, field: &str) -> ::std::option::Option<::std::string::String> {
    entry.get(field)
}

/// The stream of an event.
fn topic(event: &str) -> ::std::result::Result<&'static str, crate::Error> {
    TOPICS
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, t)| *t)
        .ok_or_else(|| crate::Error::UnknownEvent(event.to_string()))
}

/// `XADD stream MAXLEN ~ MAXLEN * field value …`
fn xadd(stream: &str, fields: &[(&str, &[u8])]) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("XADD");
    cmd.arg(stream).arg("MAXLEN").arg("~").arg(MAXLEN).arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd
}

/// The stream entry of an envelope.
fn envelope_entry(
    stream: &str,
    envelope: &crate::Envelope,
) -> ::std::result::Result<::redis::Cmd, crate::Error> {
    let body = ::serde_json::to_vec(envelope)?;
    let mut fields: ::std::vec::Vec<(&str, &[u8])> = vec![
        (F_TYPE, envelope.kind.as_bytes()),
        (F_ID, envelope.id.as_bytes()),
        (F_CONTENT_TYPE, CONTENT_TYPE.as_bytes()),
    ];
    if let Some(key) = &envelope.partitionkey {
        fields.push((F_KEY, key.as_bytes()));
    }
    fields.push((F_BODY, &body));
    Ok(xadd(stream, &fields))
}

impl Broker {
    /// Connect to `url`; fails when the server cannot be reached now.
    pub async fn connect(url: &str) -> ::std::result::Result<Self, crate::Error> {
        let client = ::redis::Client::open(url)?;
        let consumer = format!("{}-{}", crate::SERVICE, ::uuid::Uuid::new_v4().simple());
        let broker = Broker {
            inner: Arc::new(Inner {
                client,
                consumer,
                shared: ::std::sync::Mutex::new(None),
            }),
        };
        let mut conn = broker.conn().await?;
        let _: ::std::string::String = ::redis::cmd("PING").query_async(&mut conn).await?;
        Ok(broker)
    }

    /// Connect to the URL in [`URL_ENV`], or [`DEFAULT_URL`].
    pub async fn from_env() -> ::std::result::Result<Self, crate::Error> {
        let url = ::std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_string());
        Self::connect(&url).await
    }

    /// A new connection, waiting `response` at most for each reply.
    async fn open(
        &self,
        response: Duration,
    ) -> ::std::result::Result<MultiplexedConnection, crate::Error> {
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(response));
        Ok(self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// The shared connection, reopened when it was lost.
    async fn conn(&self) -> ::std::result::Result<MultiplexedConnection, crate::Error> {
        if let Some(conn) = self.shared().as_ref() {
            return Ok(conn.clone());
        }
        // Tasks that find it missing at once may each open one; the last
        // one stays shared, the others serve their own command and close.
        // Boxed: opening a connection is a large future, and every future
        // awaiting this one (one per message being settled) would carry it.
        let conn = ::std::boxed::Box::pin(self.open(Duration::from_secs(5))).await?;
        *self.shared() = Some(conn.clone());
        Ok(conn)
    }

    fn shared(&self) -> ::std::sync::MutexGuard<'_, ::std::option::Option<MultiplexedConnection>> {
        // A panic while holding it cannot leave the option half-written.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(::std::sync::PoisonError::into_inner)
    }

    /// Drop the shared connection when `e` means it is broken.
    async fn check(&self, e: ::redis::RedisError) -> crate::Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            *self.shared() = None;
        }
        e.into()
    }

    /// Create this service's consumer group on the streams it reads (from
    /// their end: like a queue binding, it gets what is published from now
    /// on). Idempotent. Producer-only services need nothing: streams are
    /// created by their first entry.
    pub async fn declare_topology(&self) -> ::std::result::Result<(), crate::Error> {
        if crate::CONSUMES.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        for stream in STREAMS.iter().chain([&RETRY_STREAM]) {
            let created: ::redis::RedisResult<()> = ::redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(*stream)
                .arg(crate::SERVICE)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(self.check(e).await),
            }
        }
        Ok(())
    }

    /// Append an envelope to its event's stream; returns after the XADD
    /// reply.
    pub(crate) async fn publish(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<(), crate::Error> {
        let cmd = envelope_entry(topic(&envelope.kind)?, envelope)?;
        let mut conn = self.conn().await?;
        let added: ::redis::RedisResult<::std::string::String> = cmd.query_async(&mut conn).await;
        match added {
            Ok(_) => Ok(()),
            Err(e) => Err(crate::Error::NotConfirmed(self.check(e).await.to_string())),
        }
    }

    /// Append envelopes in order, pipelined in one round trip. `Ok` only
    /// when every XADD succeeded; on error some may have been appended.
    pub(crate) async fn publish_many(
        &self,
        envelopes: &[crate::Envelope],
    ) -> ::std::result::Result<(), crate::Error> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for envelope in envelopes {
            pipe.add_command(envelope_entry(topic(&envelope.kind)?, envelope)?);
        }
        let mut conn = self.conn().await?;
        let added: ::redis::RedisResult<::std::vec::Vec<::std::string::String>> =
            pipe.query_async(&mut conn).await;
        match added {
            Ok(ids) if ids.len() == envelopes.len() => Ok(()),
            Ok(ids) => Err(crate::Error::NotConfirmed(format!(
                "{} of {} entries appended",
                ids.len(),
                envelopes.len()
            ))),
            Err(e) => Err(crate::Error::NotConfirmed(self.check(e).await.to_string())),
        }
    }

    /// Consume on one connection until `shutdown` resolves (`Ok`) or the
    /// connection fails (`Err`); [`crate::Subscriber`] reconnects.
    pub(crate) async fn consume_once<H: Handlers>(
        &self,
        dispatcher: &Arc<Dispatcher<H>>,
        mut shutdown: ::std::pin::Pin<&mut impl ::std::future::Future<Output = ()>>,
    ) -> ::std::result::Result<(), crate::Error> {
        use ::futures_util::FutureExt as _;
        // XREADGROUP blocks its connection: it gets one of its own.
        let mut reader = self.open(Duration::from_millis(BLOCK_MS + 5_000)).await?;
        self.declare_topology().await?;
        let promoter = ::tokio::spawn(promote(self.clone()));
        let permits = Arc::new(::tokio::sync::Semaphore::new(PREFETCH));
        let streams: ::std::vec::Vec<&'static str> =
            STREAMS.iter().copied().chain([RETRY_STREAM]).collect();
        let consumer = self.inner.consumer.as_str();
        ::tracing::info!(
            ?streams,
            group = crate::SERVICE,
            consumer,
            prefetch = PREFETCH,
            "consuming"
        );
        let mut tasks = ::tokio::task::JoinSet::new();
        let mut next_claim = ::tokio::time::Instant::now();
        let result = loop {
            while tasks.try_join_next().is_some() {}
            // Wait for a free slot, then take as many entries as are free.
            let first = ::tokio::select! {
                () = shutdown.as_mut() => break Ok(()),
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(e) => break Err(crate::Error::Broker(e.to_string())),
                },
            };
            let free = permits.available_permits() + 1;
            drop(first);
            let mut entries = ::std::vec::Vec::with_capacity(free);
            if ::tokio::time::Instant::now() >= next_claim {
                next_claim = ::tokio::time::Instant::now() + CLAIM_EVERY;
                match self.claim(&streams, free).await {
                    Ok(claimed) => entries = claimed,
                    Err(e) => break Err(e),
                }
            }
            if entries.is_empty() {
                let mut cmd = ::redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(crate::SERVICE)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(free)
                    .arg("BLOCK")
                    .arg(BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&streams);
                for _ in &streams {
                    cmd.arg(">");
                }
                // Not raced against `shutdown`: entries read are handled,
                // never left pending until a claim.
                let read: ::redis::RedisResult<::std::option::Option<StreamReadReply>> =
                    cmd.query_async(&mut reader).await;
                match read {
                    Ok(reply) => {
                        for key in reply.unwrap_or_default().keys {
                            // Only streams it was asked for.
                            let Some(stream) = streams.iter().find(|s| **s == key.key) else {
                                continue;
                            };
                            for entry in key.ids {
                                entries.push((*stream, entry, 1));
                            }
                        }
                    }
                    // NOGROUP included: the next attempt declares the groups.
                    Err(e) => break Err(e.into()),
                }
            }
            for (stream, entry, deliveries) in entries {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let broker = self.clone();
                let dispatcher = dispatcher.clone();
                tasks.spawn(handle(
                    dispatcher, broker, stream, entry, deliveries, permit,
                ));
            }
            if shutdown.as_mut().now_or_never().is_some() {
                break Ok(());
            }
        };
        // Stop taking entries, finish the ones in flight.
        while tasks.join_next().await.is_some() {}
        promoter.abort();
        if result.is_ok() {
            self.leave(&streams).await;
        }
        result
    }

    /// Take over entries pending longer than [`CLAIM_IDLE_MS`], with their
    /// delivery counts, and forget consumers gone for [`FORGET_IDLE_MS`]
    /// with nothing pending (crashed instances).
    async fn claim(
        &self,
        streams: &[&'static str],
        count: usize,
    ) -> ::std::result::Result<::std::vec::Vec<(&'static str, StreamId, u64)>, crate::Error> {
        let mut conn = self.conn().await?;
        let mut out = ::std::vec::Vec::new();
        for stream in streams {
            if out.len() >= count {
                break;
            }
            let reply: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
                .arg(*stream)
                .arg(crate::SERVICE)
                .arg(&self.inner.consumer)
                .arg(CLAIM_IDLE_MS)
                .arg("0-0")
                .arg("COUNT")
                .arg(count - out.len())
                .query_async(&mut conn)
                .await?;
            for entry in reply.claimed {
                let pending: ::std::vec::Vec<(
                    ::std::string::String,
                    ::std::string::String,
                    u64,
                    u64,
                )> = ::redis::cmd("XPENDING")
                    .arg(*stream)
                    .arg(crate::SERVICE)
                    .arg(&entry.id)
                    .arg(&entry.id)
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                let deliveries = pending.first().map_or(1, |p| p.3);
                ::tracing::warn!(stream, id = %entry.id, deliveries, "took over a pending entry");
                out.push((*stream, entry, deliveries));
            }
            let _: usize = ::redis::Script::new(FORGET)
                .key(*stream)
                .arg(crate::SERVICE)
                .arg(FORGET_IDLE_MS)
                .arg(&self.inner.consumer)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(out)
    }

    /// Leave the consumer group when nothing is pending for this consumer.
    async fn leave(&self, streams: &[&str]) {
        let Ok(mut conn) = self.conn().await else {
            return;
        };
        for stream in streams {
            let pending: ::redis::RedisResult<::std::vec::Vec<::redis::Value>> =
                ::redis::cmd("XPENDING")
                    .arg(*stream)
                    .arg(crate::SERVICE)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(&self.inner.consumer)
                    .query_async(&mut conn)
                    .await;
            if matches!(pending, Ok(p) if p.is_empty()) {
                let _: ::redis::RedisResult<i64> = ::redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(*stream)
                    .arg(crate::SERVICE)
                    .arg(&self.inner.consumer)
                    .query_async(&mut conn)
                    .await;
            }
        }
    }

    /// Read up to `limit` dead letters without removing them.
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<::std::vec::Vec<DeadLetter>, crate::Error> {
        let mut conn = self.conn().await?;
        let reply: StreamRangeReply = ::redis::cmd("XRANGE")
            .arg(DLQ)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| DeadLetter {
                event: text(e, F_TYPE).unwrap_or_default(),
                reason: text(e, F_REASON).unwrap_or_default(),
                error: text(e, F_ERROR).unwrap_or_default(),
                attempts: e.get(F_ATTEMPT).unwrap_or(1),
                first_failure: text(e, F_FIRST_FAILURE).unwrap_or_default(),
                body: e.get(F_BODY).unwrap_or_default(),
            })
            .collect())
    }

    /// Move up to `limit` dead letters to this service's retry stream, where
    /// they start again at attempt 1. Returns how many were moved.
    pub async fn replay_dead_letters(
        &self,
        limit: usize,
    ) -> ::std::result::Result<usize, crate::Error> {
        let mut conn = self.conn().await?;
        let reply: StreamRangeReply = ::redis::cmd("XRANGE")
            .arg(DLQ)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        for e in &reply.ids {
            let body: ::std::vec::Vec<u8> = e.get(F_BODY).unwrap_or_default();
            let kind = text(e, F_TYPE).unwrap_or_default();
            let stream = text(e, F_STREAM).unwrap_or_default();
            let fields: [(&str, &[u8]); 4] = [
                (F_TYPE, kind.as_bytes()),
                (F_STREAM, stream.as_bytes()),
                (F_CONTENT_TYPE, CONTENT_TYPE.as_bytes()),
                (F_BODY, &body),
            ];
            ::redis::pipe()
                .atomic()
                .add_command(xadd(RETRY_STREAM, &fields))
                .ignore()
                .cmd("XDEL")
                .arg(DLQ)
                .arg(&e.id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(reply.ids.len())
    }
}

/// Move due retries to the retry stream, until aborted: a tenth of the
/// shortest retry delay late at most (between 10 ms and 1 s).
async fn promote(broker: Broker) {
    let script = ::redis::Script::new(PROMOTE);
    let shortest = RETRY_DELAYS_MS.first().copied().unwrap_or(1_000);
    let every = Duration::from_millis((shortest / 10).clamp(10, 1_000));
    let mut tick = ::tokio::time::interval(every);
    tick.set_missed_tick_behavior(::tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(mut conn) = broker.conn().await else {
            continue;
        };
        let moved: ::redis::RedisResult<usize> = script
            .key(DELAYED)
            .key(RETRY_STREAM)
            .arg(now_ms())
            .arg(100)
            .arg(MAXLEN)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = moved {
            ::tracing::warn!(error = %e, "could not move due retries");
            broker.check(e).await;
        }
    }
}

/// Handle one entry and settle it.
async fn handle<H: Handlers>(
    dispatcher: Arc<Dispatcher<H>>,
    broker: Broker,
    stream: &'static str,
    entry: StreamId,
    deliveries: u64,
    _permit: ::tokio::sync::OwnedSemaphorePermit,
) {
    let kind = text(&entry, F_TYPE).unwrap_or_default();
    let own = stream == RETRY_STREAM;
    if !own && !crate::CONSUMES.contains(&kind.as_str()) {
        // Another event of the same topic: not for this service.
        settle(&broker, stream, &entry.id, None).await;
        return;
    }
    let body: ::std::vec::Vec<u8> = entry.get(F_BODY).unwrap_or_default();
    // Deliveries after a crash count as attempts.
    let redelivered = u32::try_from(deliveries.saturating_sub(1)).unwrap_or(u32::MAX);
    let attempt = entry
        .get::<u32>(F_ATTEMPT)
        .unwrap_or(1)
        .saturating_add(redelivered);
    let outcome = if deliveries >= MAX_DELIVERIES {
        // The earlier deliveries were never settled: the handler crashed or
        // hung on each of them.
        Outcome::DeadLetter {
            reason: Reason::Exhausted,
            error: format!("delivered {deliveries} times without being settled"),
        }
    } else {
        // Keep the entry from being claimed while the handler runs.
        let every = Duration::from_millis(CLAIM_IDLE_MS / 3);
        let keep = || touch(&broker, stream, &entry.id);
        dispatcher
            .dispatch_keeping(&body, attempt, every, keep)
            .await
    };
    // What only a failure needs is worked out only for one.
    let first_failure =
        || text(&entry, F_FIRST_FAILURE).unwrap_or_else(|| ::chrono::Utc::now().to_rfc3339());
    let origin = || text(&entry, F_STREAM).unwrap_or_else(|| stream.to_string());
    let forward = match &outcome {
        Outcome::Ack => None,
        Outcome::Retry {
            delay_ms,
            next_attempt,
            error,
        } => {
            ::tracing::warn!(event = %kind, attempt, delay_ms, %error, "handler failed; retrying");
            let next = next_attempt.to_string();
            let (origin, first_failure) = (origin(), first_failure());
            let member = [
                F_TYPE,
                &kind,
                F_STREAM,
                &origin,
                F_ENTRY,
                &entry.id,
                F_ATTEMPT,
                &next,
                F_FIRST_FAILURE,
                &first_failure,
                F_ERROR,
                error,
                F_CONTENT_TYPE,
                CONTENT_TYPE,
                F_BODY,
                &::std::string::String::from_utf8_lossy(&body),
            ];
            let member = ::serde_json::to_string(&member).unwrap_or_default();
            let due = now_ms().saturating_add(i64::try_from(*delay_ms).unwrap_or(i64::MAX));
            let mut cmd = ::redis::cmd("ZADD");
            cmd.arg(DELAYED).arg(due).arg(member);
            Some(cmd)
        }
        Outcome::DeadLetter { reason, error } => {
            ::tracing::error!(event = %kind, attempt, reason = reason.as_str(), %error, "dead-lettered");
            let attempts = attempt.to_string();
            let (origin, first_failure) = (origin(), first_failure());
            let fields: [(&str, &[u8]); 9] = [
                (F_TYPE, kind.as_bytes()),
                (F_STREAM, origin.as_bytes()),
                (F_ENTRY, entry.id.as_bytes()),
                (F_REASON, reason.as_str().as_bytes()),
                (F_ERROR, error.as_bytes()),
                (F_ATTEMPT, attempts.as_bytes()),
                (F_FIRST_FAILURE, first_failure.as_bytes()),
                (F_CONTENT_TYPE, CONTENT_TYPE.as_bytes()),
                (F_BODY, &body),
            ];
            Some(xadd(DLQ, &fields))
        }
        Outcome::Discard { reason, error } => {
            ::tracing::error!(event = %kind, attempt, reason = reason.as_str(), %error, "discarded");
            None
        }
    };
    settle(&broker, stream, &entry.id, forward).await;
}

/// Reset the idle time of an entry this consumer is working on.
async fn touch(broker: &Broker, stream: &str, id: &str) {
    let Ok(mut conn) = broker.conn().await else {
        return;
    };
    let touched: ::redis::RedisResult<::redis::Value> = ::redis::cmd("XCLAIM")
        .arg(stream)
        .arg(crate::SERVICE)
        .arg(&broker.inner.consumer)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await;
    if let Err(e) = touched {
        broker.check(e).await;
    }
}

/// Run `forward` (if any), XACK the entry (and delete it from the retry
/// stream, which only this service reads), all in one MULTI/EXEC; a plain
/// ack is one XACK. On failure the entry stays pending and is claimed
/// again later.
async fn settle(
    broker: &Broker,
    stream: &str,
    id: &str,
    forward: ::std::option::Option<::redis::Cmd>,
) {
    let mut ack = ::redis::cmd("XACK");
    ack.arg(stream).arg(crate::SERVICE).arg(id);
    let settled = match broker.conn().await {
        Ok(mut conn) => {
            let sent = if forward.is_none() && stream != RETRY_STREAM {
                // A plain ack: one command (a one-command pipeline costs
                // more).
                ack.query_async::<i64>(&mut conn).await.map(drop)
            } else {
                let mut pipe = ::redis::pipe();
                pipe.atomic();
                if let Some(cmd) = forward {
                    pipe.add_command(cmd).ignore();
                }
                pipe.add_command(ack).ignore();
                if stream == RETRY_STREAM {
                    pipe.cmd("XDEL").arg(stream).arg(id).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            };
            match sent {
                Ok(()) => Ok(()),
                Err(e) => Err(broker.check(e).await),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = settled {
        ::tracing::warn!(stream, id, error = %e, "could not settle the entry; it will be claimed again");
    }
}
