{{ header }}
//! The subscriber: decodes, validates and dispatches consumed events to
//! [`Handlers`], and decides between ack, retry and dead letter.

use ::std::future::Future;

/// Handlers of the events this service consumes: one method per event.
///
/// When the catalog gains a consumed event, this trait gains a method and
/// the compiler names it in your `impl Handlers`.
pub trait Handlers: Send + Sync + 'static {
{%- if consumed.is_empty() %}}{% endif %}
{%- for e in consumed %}
    /// Handle `{{ e.name }}` (version {{ e.version }}).
{%- for l in e.doc %}
    ///{% if !l.is_empty() %} {{ l }}{% endif %}
{%- endfor %}
    ///
    /// `Ok` acks the message; an error retries it or dead-letters it, see
    /// [`crate::HandlerError`].
    fn {{ e.method }}(
        &self,
        event: crate::types::{{ e.type_name }},
        ctx: &Context<'_>,
    ) -> impl Future<Output = ::std::result::Result<(), crate::HandlerError>> + Send;
{%- if !loop.last %}
{% endif %}
{%- endfor %}
{%- if !consumed.is_empty() %}
}{% endif %}

/// What a handler knows about a message besides its payload.
{%- if !postgres %}
#[derive(Debug)]
{%- endif %}
#[non_exhaustive]
pub struct Context<'a> {
    /// The CloudEvents envelope: id, source, time, type, raw data.
    pub envelope: &'a crate::Envelope,
    /// 1 on the first delivery, 2 on the first retry, and so on.
    pub attempt: u32,
{%- if postgres %}
    /// The transaction the event's id is recorded in: write your effects
    /// through it and they commit together, exactly once per event.
    pub tx: &'a ::tokio_postgres::Transaction<'a>,
{%- endif %}
}

/// Consumes this service's events and drives its [`Handlers`].
pub struct Subscriber<H> {
    broker: crate::Broker,
    dispatcher: ::std::sync::Arc<Dispatcher<H>>,
}

impl<H: Handlers> Subscriber<H> {
{%- if postgres %}
    /// A subscriber over a connected broker, recording processed events in
    /// the inbox of `pool`'s database (run [`crate::db::migrate`] first).
    pub fn new(broker: crate::Broker, handlers: H, pool: crate::db::Pool) -> Self {
        Subscriber {
            broker,
            dispatcher: ::std::sync::Arc::new(Dispatcher { handlers, pool }),
        }
    }
{%- else %}
    /// A subscriber over a connected broker.
    pub fn new(broker: crate::Broker, handlers: H) -> Self {
        Subscriber {
            broker,
            dispatcher: ::std::sync::Arc::new(Dispatcher { handlers }),
        }
    }
{%- endif %}

    /// Consume until `shutdown` resolves, then stop taking messages, finish
    /// and ack the ones in flight, and return. Reconnects with backoff when
    /// the broker goes away.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> ::std::result::Result<(), crate::Error> {
        let mut shutdown = ::std::pin::pin!(shutdown);
        if crate::CONSUMES.is_empty() {
            shutdown.await;
            return Ok(());
        }
        let mut backoff = ::std::time::Duration::from_millis(100);
        loop {
            let started = ::std::time::Instant::now();
            let consumed = self
                .broker
                .consume_once(&self.dispatcher, shutdown.as_mut())
                .await;
            match consumed {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if started.elapsed() > ::std::time::Duration::from_secs(60) {
                        // It ran fine for a while: a new outage.
                        backoff = ::std::time::Duration::from_millis(100);
                    }
                    ::tracing::warn!(error = %e, ?backoff, "consumer lost the broker; reconnecting");
                    ::tokio::select! {
                        () = ::tokio::time::sleep(backoff) => {}
                        () = shutdown.as_mut() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(::std::time::Duration::from_secs(10));
                }
            }
        }
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = ::tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        use ::tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => ::std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = ::std::future::pending::<()>();
    ::tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A message in the service's dead-letter destination.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The event type, when the message could be decoded.
    pub event: ::std::string::String,
    /// Why it was dead-lettered (`schema-invalid`, `retries-exhausted`, …).
    pub reason: ::std::string::String,
    /// The last error.
    pub error: ::std::string::String,
    /// Attempts made.
    pub attempts: u32,
    /// When it first failed (RFC 3339).
    pub first_failure: ::std::string::String,
    /// The original message body.
    pub body: ::std::vec::Vec<u8>,
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Not a CloudEvents JSON envelope.
    Undecodable,
    /// The payload violates the event's schema.
    SchemaInvalid,
    /// An event type this service does not consume.
    UnknownEvent,
    /// The handler returned a permanent error.
    Permanent,
    /// The handler failed on every attempt.
    Exhausted,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::SchemaInvalid => "schema-invalid",
            Reason::UnknownEvent => "unknown-event",
            Reason::Permanent => "permanent-failure",
            Reason::Exhausted => "retries-exhausted",
        }
    }
}

/// What the transport does with a message after dispatch.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Handled: ack.
    Ack,
    /// Deliver again after `delay_ms`, as attempt `next_attempt`.
    Retry {
        delay_ms: u64,
        next_attempt: u32,
        error: ::std::string::String,
    },
    /// Move to the dead-letter queue.
    DeadLetter {
        reason: Reason,
        error: ::std::string::String,
    },
    /// Failed for good but dead-lettering is off: ack and log.
    Discard {
        reason: Reason,
        error: ::std::string::String,
    },
}

/// Retry policy of one event, from the catalog.
struct Policy {
    /// The service consumes the event.
    consumed: bool,
    max_attempts: u32,
    /// Delay before attempt `n + 1` is `delays_ms[n - 1]`.
    delays_ms: &'static [u64],
    dead_letter: bool,
}

#[rustfmt::skip]
fn policy(event: &str) -> Policy {
{%- for e in consumed %}
    if event == {{ e.name_lit }} {
        return Policy { consumed: true, max_attempts: {{ e.max_attempts }}, delays_ms: &[{{ e.delays }}], dead_letter: {{ e.dead_letter }} };
    }
{%- endfor %}
    let _ = event;
    Policy { consumed: false, max_attempts: 1, delays_ms: &[], dead_letter: true }
}

/// Every retry delay any consumed event can use, ascending.
#[rustfmt::skip]
pub(crate) const RETRY_DELAYS_MS: &[u64] = &[{{ all_delays }}];

/// Turns raw messages into handler calls; shared by the consumer tasks.
pub(crate) struct Dispatcher<H> {
    handlers: H,
{%- if postgres %}
    pool: crate::db::Pool,
{%- endif %}
}

impl<H: Handlers> Dispatcher<H> {
{%- if keeps_deliveries %}
    /// [`Dispatcher::dispatch`], calling `keep` every `every` while the
    /// handler runs (to push back the broker's redelivery of the message);
    /// no timer is armed for a handler that finishes on its first poll.
    /// Its own function, so that a consumer task's future holds this one
    /// only while the handler runs, not also while it settles.
    pub(crate) async fn dispatch_keeping<F, Fut>(
        &self,
        body: &[u8],
        attempt: u32,
        every: ::std::time::Duration,
        mut keep: F,
    ) -> Outcome
    where
        F: FnMut() -> Fut,
        Fut: ::std::future::Future<Output = ()>,
    {
        let mut dispatch = ::std::pin::pin!(self.dispatch(body, attempt));
        loop {
            match ::tokio::time::timeout(every, &mut dispatch).await {
                Ok(outcome) => return outcome,
                // Boxed: rarely needed, and kept out of this future's size.
                Err(_) => ::std::boxed::Box::pin(keep()).await,
            }
        }
    }
{% endif %}
    /// Decode, validate and hand one message to its handler; the caller
    /// settles the message according to the outcome.
    pub(crate) async fn dispatch(&self, body: &[u8], attempt: u32) -> Outcome {
        let envelope: crate::Envelope = match ::serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => return failed(None, Reason::Undecodable, e.to_string()),
        };
        let policy = policy(&envelope.kind);
        if !policy.consumed {
            let error = format!("`{}` is not consumed by {}", envelope.kind, crate::SERVICE);
            return failed(None, Reason::UnknownEvent, error);
        }
        if let Err(e) = crate::schemas::validate(&envelope.kind, &envelope.data) {
            return failed(Some(policy), Reason::SchemaInvalid, e.to_string());
        }
{%- if postgres %}
        // The handler runs in a transaction that records the event id: a
        // redelivered event finds it and is acked without running again.
        let mut client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => return unavailable(attempt, e.to_string()),
        };
        let tx = match client.transaction().await {
            Ok(tx) => tx,
            Err(e) => return unavailable(attempt, e.to_string()),
        };
        let claimed = tx
            .execute(
                "INSERT INTO evgen_inbox (id, type, source) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&envelope.id, &envelope.kind, &envelope.source],
            )
            .await;
        match claimed {
            Ok(0) => {
                ::tracing::debug!(id = %envelope.id, "already processed; acking");
                return Outcome::Ack;
            }
            Ok(_) => {}
            Err(e) => return unavailable(attempt, e.to_string()),
        }
        let called = {
            let ctx = Context {
                envelope: &envelope,
                attempt,
                tx: &tx,
            };
            call(&self.handlers, &ctx).await
        };
        let result = match called {
            Ok(result) => result,
            Err(e) => return failed(Some(policy), Reason::SchemaInvalid, e),
        };
        if result.is_ok()
            && let Err(e) = tx.commit().await
        {
            return unavailable(attempt, e.to_string());
        }
{%- else %}
        let ctx = Context {
            envelope: &envelope,
            attempt,
        };
        let result = match call(&self.handlers, &ctx).await {
            Ok(result) => result,
            Err(e) => return failed(Some(policy), Reason::SchemaInvalid, e),
        };
{%- endif %}
        match result {
            Ok(()) => Outcome::Ack,
            Err(crate::HandlerError::Retryable(e)) if attempt < policy.max_attempts => {
                let i = (attempt as usize)
                    .saturating_sub(1)
                    .min(policy.delays_ms.len().saturating_sub(1));
                let delay_ms = policy.delays_ms.get(i).copied().unwrap_or(0);
                Outcome::Retry {
                    delay_ms,
                    next_attempt: attempt + 1,
                    error: e.to_string(),
                }
            }
            Err(crate::HandlerError::Retryable(e)) => {
                failed(Some(policy), Reason::Exhausted, e.to_string())
            }
            Err(crate::HandlerError::Permanent(e)) => {
                failed(Some(policy), Reason::Permanent, e.to_string())
            }
        }
    }
}

/// Type the payload and call its handler; `Err` when the payload does not
/// fit the generated type.
async fn call<H: Handlers>(
    handlers: &H,
    ctx: &Context<'_>,
) -> ::std::result::Result<::std::result::Result<(), crate::HandlerError>, ::std::string::String> {
    // Typed from the envelope's data in place, without copying it first.
    let data = &ctx.envelope.data;
{%- for e in consumed %}
    if ctx.envelope.kind == {{ e.name_lit }} {
        let event = ::serde::Deserialize::deserialize(data).map_err(|e| e.to_string())?;
        return Ok(handlers.{{ e.method }}(event, ctx).await);
    }
{%- endfor %}
    let _ = (handlers, data);
    Err(format!("`{}` has no handler", ctx.envelope.kind))
}
{% if postgres %}
/// The database is unreachable: try the same attempt again later, so an
/// outage does not use up the event's attempts.
fn unavailable(attempt: u32, error: ::std::string::String) -> Outcome {
    ::tracing::warn!(%error, "database unavailable; the message will be redelivered");
    Outcome::Retry {
        delay_ms: RETRY_DELAYS_MS.first().copied().unwrap_or(1_000),
        next_attempt: attempt,
        error,
    }
}
{% endif %}
fn failed(
    policy: ::std::option::Option<Policy>,
    reason: Reason,
    error: ::std::string::String,
) -> Outcome {
    if policy.is_none_or(|p| p.dead_letter) {
        Outcome::DeadLetter { reason, error }
    } else {
        Outcome::Discard { reason, error }
    }
}
