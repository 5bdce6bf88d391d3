{{ header }}
//! The transactional outbox: [`enqueue`] writes an event in the caller's
//! transaction; the [`Relay`] publishes committed rows in order, with the
//! broker's confirms, and marks them published.
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
    tx.execute("SELECT pg_notify('evgen_outbox', '')", &[])
        .await?;
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

/// The oldest `$1` unpublished rows (the window), then among them the
/// rows whose key this transaction can lock. The window bounds the
/// advisory locks taken to one batch: locking the key of every unpublished
/// row overflowed PostgreSQL's lock table (`out of shared memory`) once the
/// backlog held a few thousand keys, and cost O(backlog) per batch. An
/// earlier row of a key is always in the window when a later one is, so
/// one key's rows are still published in order.
const SELECT_BATCH: &str = "
    WITH window_ AS MATERIALIZED (
        SELECT seq, aggregatetype, aggregateid FROM evgen_outbox
        WHERE published_at IS NULL
        ORDER BY seq
        LIMIT $1
    ), keyed AS MATERIALIZED (
        SELECT seq FROM window_
        WHERE pg_try_advisory_xact_lock(hashtext('evgen_outbox:' || aggregatetype || ':' || aggregateid))
    )
    SELECT seq, payload FROM evgen_outbox
    WHERE seq = ANY(ARRAY(SELECT seq FROM keyed))
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
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(3600),
        }
    }

    /// Rows published per transaction (default 500).
    pub fn batch_size(mut self, rows: i64) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// How often to look for rows when no notification came (default 1 s).
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
        loop {
            loop {
                match self.publish_batch().await {
                    Ok(n) => {
                        backoff = Duration::from_millis(100);
                        if n < self.batch as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        ::tracing::warn!(error = %e, ?backoff, "outbox relay failed; retrying");
                        ::tokio::select! {
                            () = ::tokio::time::sleep(backoff) => {}
                            () = shutdown.as_mut() => {
                                listener.abort();
                                return Ok(());
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            if cleaned.elapsed() > Duration::from_secs(60) {
                cleaned = Instant::now();
                if let Err(e) = self.clean_up().await {
                    ::tracing::warn!(error = %e, "outbox clean-up failed");
                }
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

    /// Publish one batch in order and mark it; returns the rows published.
    async fn publish_batch(&self) -> Result<usize, crate::Error> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx.query(SELECT_BATCH, &[&self.batch]).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in &rows {
            seqs.push(row.get(0));
            let payload: ::serde_json::Value = row.get(1);
            envelopes.push(::serde_json::from_value::<crate::Envelope>(payload)?);
        }
        // Rows were validated by `enqueue`; publish them as they are, so a
        // schema change after enqueueing cannot block the outbox.
        self.publisher.broker().publish_many(&envelopes).await?;
        tx.execute(
            "UPDATE evgen_outbox SET published_at = now() WHERE seq = ANY($1)",
            &[&seqs],
        )
        .await?;
        tx.commit().await?;
        Ok(rows.len())
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
