//! The orders service.
//!
//! This file is yours: evgen wrote it once and never touches it again.
//! Configuration comes from the environment:
//!
//! - `AMQP_URL`: the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! - `PORT`: the HTTP port (default 8080)
//! - `RUST_LOG`: log filter (default `info`)

mod handlers;

use orders_events as events;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone)]
struct AppState {
    publisher: events::Publisher,
}

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
    let subscriber = events::Subscriber::new(broker, handlers::App::default());

    // One shutdown signal for both the HTTP server and the subscriber.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut consumer_stop = stopped.clone();
    let consumer = tokio::spawn(subscriber.run(async move {
        let _ = consumer_stop.wait_for(|s| *s).await;
    }));

    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/events/{name}", post(publish))
        .with_state(AppState { publisher });
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

/// `POST /events/{name}`: publish a produced event from its JSON payload.
async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(data): Json<Value>,
) -> (StatusCode, Json<Value>) {
    match state.publisher.publish_json(&name, data).await {
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
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}
