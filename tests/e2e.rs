//! End to end through each real broker on 127.0.0.1: two generated
//! services publish over HTTP and handle each other's events; an invalid
//! payload is refused before it reaches the broker. The catalogs in
//! tests/e2e/ say `broker: rabbitmq`; for the other brokers the test changes
//! that one line and nothing else.

mod common;

use common::Service;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// (catalog spelling, port, name for messages, how to start it)
const BROKERS: &[(&str, u16, &str, &str)] = &[
    ("rabbitmq", 5672, "RabbitMQ", "rabbitmq-server -detached"),
    (
        "nats",
        4222,
        "NATS",
        "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server &",
    ),
    (
        "redis",
        6379,
        "Redis",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    ),
    (
        "kafka",
        9092,
        "Kafka (tansu)",
        "bash scripts/test.sh starts tansu",
    ),
];

fn require_broker(broker: &str) {
    let (_, port, name, hint) = BROKERS
        .iter()
        .find(|b| b.0 == broker)
        .expect("known broker");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_err() {
        panic!("{name} is not reachable on 127.0.0.1:{port} (start it: `{hint}`)");
    }
}

/// Copy a catalog folder, switching its broker with one line.
fn catalog_for(case: &str, broker: &str) -> PathBuf {
    let src = common::root().join("tests/e2e").join(case);
    let dst = common::scratch(&format!("e2e-catalog-{broker}-{case}"));
    std::fs::create_dir_all(dst.join("schemas")).expect("mkdir");
    for e in std::fs::read_dir(src.join("schemas"))
        .expect("schemas")
        .flatten()
    {
        std::fs::copy(e.path(), dst.join("schemas").join(e.file_name())).expect("copy");
    }
    let text = std::fs::read_to_string(src.join("evgen.yaml")).expect("catalog");
    let text = evgen::edit::set_service_key(&text, "broker", broker);
    let text = evgen::edit::set_service_key(&text, "name", &format!("e2e-{broker}-{case}"));
    std::fs::write(dst.join("evgen.yaml"), text).expect("write");
    dst
}

/// Generate and build a service from a catalog folder; returns its binary.
fn build_service(case: &str, broker: &str) -> PathBuf {
    let ws = common::scratch(&format!("e2e-{broker}-{case}"));
    let cat = catalog_for(case, broker).join("evgen.yaml");
    let (code, out, err) = common::evgen(&[
        "new",
        ws.to_str().expect("utf-8"),
        "--catalog",
        cat.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    common::cargo(&ws, &["build"]);
    common::target_dir()
        .join("debug")
        .join(format!("e2e-{broker}-{case}"))
}

/// Start a service binary against the brokers on 127.0.0.1.
fn start(bin: &Path, port: u16) -> Service {
    let mut command = Command::new(bin);
    command
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("NATS_URL", "nats://127.0.0.1:4222")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("KAFKA_BROKERS", "127.0.0.1:9092")
        .env(
            common::TANSU_ONE_RECORD_PER_BATCH.0,
            common::TANSU_ONE_RECORD_PER_BATCH.1,
        )
        .env("RUST_LOG", "info");
    Service::start(command, port)
}

fn id_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["id"].as_str().expect("id").to_string()
}

fn two_services_exchange_events(broker: &str, port: u16) {
    require_broker(broker);
    let orders_bin = build_service("orders", broker);
    let payments_bin = build_service("payments", broker);
    let orders = start(&orders_bin, port);
    let payments = start(&payments_bin, port + 1);

    let order = r#"{"order_id":"0b9f5f5e-6c1e-4c61-a7a4-8b1a3c0d2e11","customer_id":"c1","lines":[{"sku":"a","quantity":2}],"total":{"amount_cents":1250,"currency":"EUR"},"placed_at":"2026-11-29T06:00:00Z"}"#;
    let (status, body) = orders.http("POST", "/events/order.placed", order);
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let line = payments.wait_for(
        |l| l.contains(&id) && l.contains("handled"),
        Duration::from_secs(20),
    );
    assert!(line.contains("order.placed"), "{line}");

    let payment = r#"{"order_id":"0b9f5f5e-6c1e-4c61-a7a4-8b1a3c0d2e11","payment_id":"p-1","status":"succeeded"}"#;
    let (status, body) = payments.http("POST", "/events/payment.processed", payment);
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    orders.wait_for(
        |l| l.contains(&id) && l.contains("handled"),
        Duration::from_secs(20),
    );

    // Invalid payloads are refused with the schema's reasons, and nothing
    // reaches the broker.
    let (status, body) = orders.http(
        "POST",
        "/events/order.placed",
        r#"{"order_id":"not-a-uuid","lines":[]}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("customer_id") && body.contains("uuid"),
        "{body}"
    );
    // Not an event this service produces.
    let (status, _) = orders.http("POST", "/events/payment.processed", payment);
    assert_eq!(status, 404);
    std::thread::sleep(Duration::from_millis(500));
    let handled = payments.count("handled");
    assert_eq!(handled, 1, "the invalid event must not have been delivered");
}

#[test]
fn rabbitmq_two_services_exchange_events() {
    two_services_exchange_events("rabbitmq", 18401);
}

#[test]
fn nats_two_services_exchange_events() {
    two_services_exchange_events("nats", 18411);
}

#[test]
fn redis_two_services_exchange_events() {
    two_services_exchange_events("redis", 18421);
}

#[test]
fn kafka_two_services_exchange_events() {
    two_services_exchange_events("kafka", 18431);
}
