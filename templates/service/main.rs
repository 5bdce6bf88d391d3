//! The {{ s.name }} service.
//!
//! This file is yours: evgen wrote it once and never touches it again.
//! Configuration comes from the environment:
//!
//! - `{{ url_env }}`: the broker (default `{{ default_url }}`)
{%- if s.postgres %}
//! - `DATABASE_URL`: PostgreSQL for the outbox and the inbox (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`)
{%- endif %}
//! - `PORT`: the HTTP port (default 8080)
//! - `RUST_LOG`: log filter (default `info`)
//!
//! HTTP: `GET /healthz`, `POST /events/{name}` publishes a produced event
//! from its JSON payload, `GET /admin/dead-letters?limit=N` lists dead
//! letters and `POST /admin/dead-letters/replay` moves them back to the queue.

mod handlers;

use {{ events_mod }} as events;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone)]
struct AppState {
    broker: events::Broker,
{%- if s.postgres %}
    pool: events::db::Pool,
{%- else %}
    publisher: events::Publisher,
{%- endif %}
}
{%- if s.postgres %}

/// The example's business table: one row per accepted request, written in
/// the same transaction as the event.
const ACCEPTED_REQUESTS: &str = "CREATE TABLE IF NOT EXISTS accepted_requests (
    event_id text PRIMARY KEY,
    event text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)";
{%- endif %}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 8080,
    };

    let broker = connect().await?;
    broker.declare_topology().await?;
    let publisher = events::Publisher::new(broker.clone());
{%- if s.postgres %}
    let database_url = std::env::var(events::db::DATABASE_URL_ENV)
        .unwrap_or_else(|_| events::db::DEFAULT_DATABASE_URL.into());
    let pool = events::db::pool(&database_url, 32)?;
    migrate(&pool).await?;
    pool.get().await?.batch_execute(ACCEPTED_REQUESTS).await?;
    let subscriber =
        events::Subscriber::new(broker.clone(), handlers::App::default(), pool.clone());
    let relay = events::outbox::Relay::new(pool.clone(), publisher, &database_url);
{%- else %}
    let subscriber = events::Subscriber::new(broker.clone(), handlers::App::default());
{%- endif %}

    // One shutdown signal for the HTTP server and the background tasks.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let consumer = tokio::spawn(subscriber.run(until_stopped(stopped.clone())));
{%- if s.postgres %}
    let relay = tokio::spawn(relay.run(until_stopped(stopped.clone())));
{%- endif %}

    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/events/{name}", post(publish))
        .route("/admin/dead-letters", get(dead_letters))
        .route("/admin/dead-letters/replay", post(replay))
{%- if s.postgres %}
        .with_state(AppState { broker, pool });
{%- else %}
        .with_state(AppState { broker, publisher });
{%- endif %}
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            events::shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        })
        .await?;
    consumer.await??;
{%- if s.postgres %}
    relay.await??;
{%- endif %}
    Ok(())
}

/// Connect to the broker, retrying for a minute while it starts.
async fn connect() -> Result<events::Broker, events::Error> {
    let url = std::env::var(events::URL_ENV).unwrap_or_else(|_| events::DEFAULT_URL.into());
    let mut delay = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    loop {
        match events::Broker::connect(&url).await {
            Ok(b) => return Ok(b),
            Err(e) if waited < Duration::from_secs(60) => {
                tracing::warn!(error = %e, "broker not reachable yet");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
{%- if s.postgres %}

/// Apply the migrations, retrying for a minute while the database starts.
async fn migrate(pool: &events::db::Pool) -> Result<(), events::Error> {
    let mut waited = Duration::ZERO;
    loop {
        match events::db::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if waited < Duration::from_secs(60) => {
                tracing::warn!(error = %e, "database not reachable yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Write the business row and the event in one transaction: the event is
/// published by the outbox relay once, and only if the row committed.
async fn accept(
    state: &AppState,
    name: &str,
    data: Value,
) -> Result<events::Envelope, events::Error> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let envelope = events::outbox::enqueue_json(&tx, name, data).await?;
    tx.execute(
        "INSERT INTO accepted_requests (event_id, event) VALUES ($1, $2)",
        &[&envelope.id, &name],
    )
    .await?;
    tx.commit().await?;
    Ok(envelope)
}
{%- endif %}

/// `POST /events/{name}`: publish a produced event from its JSON payload.
async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(data): Json<Value>,
) -> (StatusCode, Json<Value>) {
{%- if s.postgres %}
    match accept(&state, &name, data).await {
{%- else %}
    match state.publisher.publish_json(&name, data).await {
{%- endif %}
        Ok(envelope) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": envelope.id, "type": envelope.kind })),
        ),
        Err(events::Error::Invalid { errors, .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "errors": errors })),
        ),
        Err(events::Error::Encode(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "errors": [e.to_string()] })),
        ),
        Err(events::Error::UnknownEvent(e)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("`{e}` is not an event this service publishes") })),
        ),
        Err(e) => unavailable(e),
    }
}

/// `GET /admin/dead-letters?limit=N`: the first N (default 100) dead
/// letters, left in place.
async fn dead_letters(State(state): State<AppState>, uri: Uri) -> (StatusCode, Json<Value>) {
    let limit = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    match state.broker.dead_letters(limit).await {
        Ok(list) => {
            let list: Vec<Value> = list
                .iter()
                .map(|d| {
                    json!({
                        "event": d.event,
                        "reason": d.reason,
                        "error": d.error,
                        "attempts": d.attempts,
                        "first_failure": d.first_failure,
                        "body": String::from_utf8_lossy(&d.body),
                    })
                })
                .collect();
            (StatusCode::OK, Json(Value::Array(list)))
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /admin/dead-letters/replay`: move dead letters back to the queue.
async fn replay(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.broker.replay_dead_letters(100_000).await {
        Ok(n) => (StatusCode::OK, Json(json!({ "replayed": n }))),
        Err(e) => unavailable(e),
    }
}

fn unavailable(e: events::Error) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": e.to_string() })),
    )
}
