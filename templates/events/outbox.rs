{{ header }}
//! The transactional outbox: [`enqueue`] writes an event in the caller's
//! transaction; the [`Relay`] publishes committed rows in order, with the
//! broker's confirms, and marks them published.
//!
//! The relay looks for rows every 50 ms when idle ([`Relay::poll_interval`])
//! and at once after a batch that found any; it also wakes on `NOTIFY evgen_outbox`,
//! for writers that prefer to signal (`enqueue` does not: see there).
//!
//! Several instances may run a relay: each batch locks its rows with
//! `FOR UPDATE SKIP LOCKED` and the keys of those rows with transaction
//! advisory locks, so two relays never publish events of the same key out
//! of order, and never publish the same row twice.

use ::futures_util::StreamExt as _;
use ::std::sync::Arc;
use ::std::time::{Duration, Instant};

/// Write `event` to the outbox inside `tx`. It is published after the
/// transaction commits, and never if it rolls back.
///
/// One key's events are published in the order their rows were written.
/// Transactions that write events of one key concurrently must take turns
/// on that key (lock the aggregate's row first, as most writes of an
/// aggregate do): otherwise a transaction that wrote first but commits
/// last has its event published after the other's.
pub async fn enqueue<E: crate::Event>(
    tx: &::tokio_postgres::Transaction<'_>,
    event: &E,
) -> Result<crate::Envelope, crate::Error> {
    if !crate::PRODUCES.contains(&E::NAME) {
        return Err(crate::Error::UnknownEvent(E::NAME.to_string()));
    }
    let data = ::serde_json::to_value(event)?;
    crate::schemas::validate(E::NAME, &data)?;
    let envelope = crate::Envelope::new(E::NAME, E::VERSION, event.key(), data);
    let id: ::uuid::Uuid = envelope
        .id
        .parse()
        .map_err(|_| crate::Error::Database(format!("invalid id {}", envelope.id)))?;
    let payload = ::serde_json::to_value(&envelope)?;
    let aggregate_type = E::NAME.split('.').next().unwrap_or(E::NAME);
    let aggregate_id = envelope.partitionkey.clone().unwrap_or_default();
    tx.execute(
        "INSERT INTO evgen_outbox (id, aggregatetype, aggregateid, type, payload)
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &aggregate_type, &aggregate_id, &E::NAME, &payload],
    )
    .await?;
    // No NOTIFY here: PostgreSQL serializes the commits of notifying
    // transactions database-wide (a lock held through the WAL flush), which
    // capped every writer at a few hundred commits/s. The relay polls.
    Ok(envelope)
}

/// [`enqueue`] for a produced event given by name as JSON (for HTTP
/// handlers and tools): validated against its schema, then typed.
pub async fn enqueue_json(
    tx: &::tokio_postgres::Transaction<'_>,
    name: &str,
    data: ::serde_json::Value,
) -> Result<crate::Envelope, crate::Error> {
{%- if produced.is_empty() %}
    let _ = (tx, data);
    Err(crate::Error::UnknownEvent(name.to_string()))
{%- else %}
    crate::schemas::validate(name, &data)?;
    match name {
{%- for e in produced %}
        {{ e.name_lit }} => {
            let event: crate::types::{{ e.type_name }} = ::serde_json::from_value(data)?;
            enqueue(tx, &event).await
        }
{%- endfor %}
        _ => Err(crate::Error::UnknownEvent(name.to_string())),
    }
{%- endif %}
}

/// Publishes the outbox; run one per instance (see the module docs).
pub struct Relay {
    pool: crate::db::Pool,
    publisher: crate::Publisher,
    database_url: String,
    batch: i64,
    poll: Duration,
    retention: Duration,
}

/// The oldest `$1` unpublished rows of keys other than those of the batch
/// in flight (its rows are `$2`), then among them the rows whose key this
/// transaction can lock. Each key is tried once: tried per row, a key whose
/// holder committed between two of its rows was refused for the earlier
/// row and granted for the later one, which was then published first. The
/// in-flight batch's keys are left out by name, not only by its locks: a
/// transaction that fails (a statement error, its session killed) releases
/// its locks at once, and a later row of its keys must not go before its
/// rows are taken again (by the batch after this one, or another relay).
/// The window bounds the advisory locks taken to one batch: locking the
/// key of every unpublished row overflowed PostgreSQL's lock table (`out
/// of shared memory`) once the backlog held a few thousand keys, and cost
/// O(backlog) per batch. An earlier row of a key is always in the window
/// when a later one is, so one key's rows are published in order.
const SELECT_BATCH: &str = "
    WITH busy AS MATERIALIZED (
        SELECT DISTINCT aggregatetype, aggregateid FROM evgen_outbox
        WHERE seq = ANY($2::bigint[])
    ), window_ AS MATERIALIZED (
        SELECT seq, aggregatetype, aggregateid FROM evgen_outbox
        WHERE published_at IS NULL
          AND (aggregatetype, aggregateid) NOT IN (SELECT aggregatetype, aggregateid FROM busy)
        ORDER BY seq
        LIMIT $1
    ), keys AS MATERIALIZED (
        SELECT DISTINCT aggregatetype, aggregateid FROM window_
    ), locked AS MATERIALIZED (
        SELECT aggregatetype, aggregateid FROM keys
        WHERE pg_try_advisory_xact_lock(hashtext('evgen_outbox:' || aggregatetype || ':' || aggregateid))
    )
    SELECT seq, payload FROM evgen_outbox
    WHERE seq = ANY(ARRAY(SELECT seq FROM window_ JOIN locked USING (aggregatetype, aggregateid)))
      AND published_at IS NULL
    ORDER BY seq
    FOR UPDATE SKIP LOCKED";

impl Relay {
    /// A relay over `pool`, listening for new rows on `database_url`.
    pub fn new(pool: crate::db::Pool, publisher: crate::Publisher, database_url: &str) -> Self {
        Relay {
            pool,
            publisher,
            database_url: database_url.to_string(),
            batch: 500,
            poll: Duration::from_millis(50),
            retention: Duration::from_secs(3600),
        }
    }

    /// Rows published per transaction (default 500).
    pub fn batch_size(mut self, rows: i64) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// How often to look for rows when idle (default 50 ms): the added
    /// latency of an event is up to this, about half of it on average.
    /// Each look is one indexed query.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// How long published rows are kept before they are deleted (default 1 h).
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = keep;
        self
    }

    /// Publish until `shutdown` resolves; a batch in flight is finished
    /// first. Database and broker errors are retried with backoff.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), crate::Error> {
        let mut shutdown = ::std::pin::pin!(shutdown);
        let wake = Arc::new(::tokio::sync::Notify::new());
        let listener = ::tokio::spawn(listen(self.database_url.clone(), wake.clone()));
        let mut backoff = Duration::from_millis(100);
        let mut cleaned = Instant::now();
        let mut stopped = false;
        loop {
            let drained = self.drain(shutdown.as_mut(), &mut stopped).await;
            if stopped {
                // `shutdown` resolved during the drain: not polled again.
                if let Err(e) = drained {
                    ::tracing::warn!(error = %e, "outbox relay failed while stopping");
                }
                break;
            }
            let published = match drained {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    n
                }
                Err(e) => {
                    ::tracing::warn!(error = %e, ?backoff, "outbox relay failed; retrying");
                    ::tokio::select! {
                        () = ::tokio::time::sleep(backoff) => {}
                        () = shutdown.as_mut() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if cleaned.elapsed() > Duration::from_secs(60) {
                cleaned = Instant::now();
                if let Err(e) = self.clean_up().await {
                    ::tracing::warn!(error = %e, "outbox clean-up failed");
                }
            }
            if published > 0 {
                // A drain ends when the next batch finds nothing, which
                // also happens when every key in its window was taken by
                // the batch before it (few keys): look again at once.
                continue;
            }
            ::tokio::select! {
                () = shutdown.as_mut() => break,
                () = wake.notified() => {}
                () = ::tokio::time::sleep(self.poll) => {}
            }
        }
        listener.abort();
        Ok(())
    }

    /// Publish batches until a look finds nothing or `shutdown` resolves
    /// (then `stopped` is set); returns the rows published. Two batches
    /// are in flight: the next one is selected while the current one is
    /// published, leaving out the current one's keys by name, so it never
    /// takes a later row of a key whose earlier rows the current batch may
    /// still give back (a failed batch rolls back at once).
    async fn drain(
        &self,
        mut shutdown: ::std::pin::Pin<&mut impl Future<Output = ()>>,
        stopped: &mut bool,
    ) -> Result<usize, crate::Error> {
        use ::futures_util::FutureExt as _;
        let mut total = 0;
        let mut current = self.start(Vec::new());
        let Ok(mut seqs) = (&mut current.selected).await else {
            return current.finish().await;
        };
        while !seqs.is_empty() {
            if shutdown.as_mut().now_or_never().is_some() {
                *stopped = true;
                return current.finish().await.map(|n| total + n);
            }
            let mut next = self.start(seqs);
            let selected = (&mut next.selected).await;
            let done = current.finish().await;
            match (done, selected) {
                (Ok(n), Ok(next_seqs)) => {
                    total += n;
                    seqs = next_seqs;
                    current = next;
                }
                (Ok(n), Err(_)) => {
                    total += n;
                    return next.finish().await.map(|m| total + m);
                }
                (Err(e), _) => {
                    // The next batch is consistent on its own: let it end.
                    let _ = next.finish().await;
                    return Err(e);
                }
            }
        }
        current.finish().await.map(|n| total + n)
    }

    /// Start a batch while the rows `in_flight` are being published (see
    /// [`Relay::drain`]).
    fn start(&self, in_flight: Vec<i64>) -> Batch {
        let (selected_tx, selected) = ::tokio::sync::oneshot::channel();
        let task = ::tokio::spawn(publish_batch(
            self.pool.clone(),
            self.publisher.clone(),
            self.batch,
            in_flight,
            selected_tx,
        ));
        Batch { task, selected }
    }

    async fn clean_up(&self) -> Result<(), crate::Error> {
        let client = self.pool.get().await?;
        let keep = self.retention.as_secs_f64();
        client
            .execute(
                "DELETE FROM evgen_outbox
                 WHERE published_at < now() - make_interval(secs => $1)",
                &[&keep],
            )
            .await?;
        Ok(())
    }
}

/// A batch in flight: its task and the rows it selected.
struct Batch {
    task: ::tokio::task::JoinHandle<Result<usize, crate::Error>>,
    selected: ::tokio::sync::oneshot::Receiver<Vec<i64>>,
}

impl Batch {
    /// Wait for it to end: the rows it published.
    async fn finish(self) -> Result<usize, crate::Error> {
        self.task
            .await
            .map_err(|e| crate::Error::Database(format!("outbox batch task: {e}")))?
    }
}

/// Select one batch in order (leaving out the keys of `in_flight`), report
/// the selection, publish it and mark it, then commit; a failed batch rolls
/// back. Returns the rows published.
async fn publish_batch(
    pool: crate::db::Pool,
    publisher: crate::Publisher,
    size: i64,
    in_flight: Vec<i64>,
    selected: ::tokio::sync::oneshot::Sender<Vec<i64>>,
) -> Result<usize, crate::Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx.query(SELECT_BATCH, &[&size, &in_flight]).await?;
    let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
    let mut envelopes = Vec::with_capacity(rows.len());
    for row in &rows {
        seqs.push(row.try_get(0)?);
        let ::tokio_postgres::types::Json(envelope) =
            row.try_get::<_, ::tokio_postgres::types::Json<crate::Envelope>>(1)?;
        envelopes.push(envelope);
    }
    let _ = selected.send(seqs.clone());
    if rows.is_empty() {
        return Ok(0);
    }
    // Rows were validated by `enqueue`; publish them as they are, so a
    // schema change after enqueueing cannot block the outbox. The rows are
    // marked while the broker confirms: the mark commits only after every
    // confirm, and a failed publish rolls it back.
    let params: [&(dyn ::tokio_postgres::types::ToSql + Sync); 1] = [&seqs];
    let mark = tx.execute(
        "UPDATE evgen_outbox SET published_at = now() WHERE seq = ANY($1)",
        &params,
    );
    let publish = publisher.broker().publish_many(&envelopes);
    let (marked, published) = ::tokio::join!(mark, publish);
    // On failure dropping `tx` rolls back: the rows are published again
    // later, in order (the next batch leaves their keys out by name).
    published?;
    marked?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Wake the relay on `NOTIFY evgen_outbox`; reconnects when the
/// connection drops (the relay polls meanwhile).
async fn listen(url: String, wake: Arc<::tokio::sync::Notify>) {
    loop {
        match ::tokio_postgres::connect(&url, ::tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let notify = wake.clone();
                let driver = ::tokio::spawn(async move {
                    let mut messages =
                        ::futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(::tokio_postgres::AsyncMessage::Notification(_)) => {
                                notify.notify_one();
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client.batch_execute("LISTEN evgen_outbox").await.is_ok() {
                    wake.notify_one();
                    let _ = driver.await;
                } else {
                    driver.abort();
                }
            }
            Err(e) => ::tracing::debug!(error = %e, "outbox listener cannot connect"),
        }
        ::tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
