//! Fault tests of the generated delivery code against the real brokers and
//! PostgreSQL on 127.0.0.1, from the same code for every broker. The
//! service under test (tests/reliability/) produces `item.created` through
//! its outbox and consumes it itself; every handled event leaves one row in
//! `effects` written in the inbox transaction. Each test prints its figures.
//! The catalog says `broker: rabbitmq`; the other brokers' services are
//! generated from it by changing that one line.

mod common;

use common::Service;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DB: &str = "evgen_rel";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The scenarios share the service's queues and database: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn require(port: u16, name: &str, hint: &str) {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_err() {
        panic!("{name} is not reachable on 127.0.0.1:{port} (start it: `{hint}`)");
    }
}

/// (catalog spelling, port, URL variable, URL scheme, name, how to start it)
const BROKERS: &[(&str, u16, &str, &str, &str, &str)] = &[
    (
        "rabbitmq",
        5672,
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:{port}/%2f",
        "RabbitMQ",
        "rabbitmq-server -detached",
    ),
    (
        "nats",
        4222,
        "NATS_URL",
        "nats://127.0.0.1:{port}",
        "NATS",
        "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server &",
    ),
    (
        "redis",
        6379,
        "REDIS_URL",
        "redis://127.0.0.1:{port}",
        "Redis",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    ),
    (
        "kafka",
        9092,
        "KAFKA_BROKERS",
        "127.0.0.1:{port}",
        "Kafka (tansu)",
        "bash scripts/test.sh starts tansu",
    ),
];

fn broker_info(
    broker: &str,
) -> &'static (
    &'static str,
    u16,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
) {
    BROKERS
        .iter()
        .find(|b| b.0 == broker)
        .expect("known broker")
}

/// The broker's URL through `port` (the broker's own, or a proxy's).
fn url(broker: &str, port: u16) -> String {
    broker_info(broker).3.replace("{port}", &port.to_string())
}

fn require_services(broker: &str) {
    let (_, port, _, _, name, hint) = broker_info(broker);
    require(*port, name, hint);
    require(
        5432,
        "PostgreSQL",
        "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    );
}

/// Build the fault-test service for `broker` once per test run.
fn binary(broker: &str) -> PathBuf {
    static BINS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut bins = BINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = bins.get(broker) {
        return b.clone();
    }
    let src = common::root().join("tests/reliability");
    let cat = common::scratch(&format!("reliability-catalog-{broker}"));
    std::fs::create_dir_all(cat.join("schemas")).expect("mkdir");
    std::fs::copy(
        src.join("schemas/item.created.json"),
        cat.join("schemas/item.created.json"),
    )
    .expect("schema");
    let text = std::fs::read_to_string(src.join("evgen.yaml")).expect("catalog");
    std::fs::write(
        cat.join("evgen.yaml"),
        evgen::edit::set_service_key(&text, "broker", broker),
    )
    .expect("write");
    let ws = common::scratch(&format!("reliability-{broker}"));
    let (code, out, err) = common::evgen(&[
        "new",
        ws.to_str().expect("utf-8"),
        "--catalog",
        cat.join("evgen.yaml").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::copy(src.join("handlers.rs"), ws.join("service/src/handlers.rs")).expect("handlers");
    if broker == "redis" {
        // `relays_publish_each_key_in_order` runs it.
        std::fs::create_dir_all(ws.join("service/examples")).expect("mkdir");
        std::fs::copy(src.join("relays.rs"), ws.join("service/examples/relays.rs"))
            .expect("relays");
        common::cargo(&ws, &["build", "--bins", "--examples"]);
    } else {
        common::cargo(&ws, &["build"]);
    }
    // Every broker's service is called `rel`: keep each binary apart.
    let bin = ws.join("rel");
    std::fs::copy(common::target_dir().join("debug/rel"), &bin).expect("copy binary");
    bins.insert(broker.to_string(), bin.clone());
    bin
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql failed: {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The `n` range of the running scenario's events: late redeliveries of an
/// earlier scenario (whose inbox was in a dropped database) are not counted.
static RANGE: Mutex<(i64, i64)> = Mutex::new((0, 0));

/// Start a scenario of `n` events; returns the offset of its `n` values.
fn begin(n: usize) -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    if NEXT.load(Ordering::SeqCst) == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        let _ = NEXT.compare_exchange(
            0,
            now as i64 * 1_000_000,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
    let offset = NEXT.fetch_add(n as i64 + 1_000, Ordering::SeqCst);
    *RANGE.lock().unwrap_or_else(|e| e.into_inner()) = (offset + 1, offset + n as i64 + 100);
    offset
}

/// Empty the service's queues and dead letters left by earlier runs.
fn purge_queues(broker: &str) {
    match broker {
        "nats" => {
            for stream in ["REL", "REL_DLQ", "REL_RETRY"] {
                nats_request(&format!("$JS.API.STREAM.PURGE.{stream}"));
            }
            return;
        }
        "redis" => {
            redis_command(&[
                b"DEL",
                b"rel.item",
                b"rel.dlq",
                b"rel.retry",
                b"rel.delayed",
            ]);
            return;
        }
        "rabbitmq" => {}
        _ => return,
    }
    rt().block_on(async {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        for q in [
            "rel",
            "rel.dlq",
            "rel.retry.200ms",
            "rel.retry.400ms",
            "rel.retry.800ms",
        ] {
            let ch = conn.create_channel().await.expect("channel");
            let _ = ch
                .queue_purge(q.into(), lapin::options::QueuePurgeOptions::default())
                .await;
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Publish raw bodies where the service consumes `item.created`, in the
/// broker's own wire format, bypassing the generated code.
fn publish_raw(broker: &str, bodies: &[Vec<u8>]) {
    match broker {
        "rabbitmq" => publish_raw_amqp(bodies),
        "nats" => publish_raw_nats(bodies),
        "redis" => publish_raw_redis(bodies),
        "kafka" => publish_raw_kafka(bodies),
        other => panic!("no raw publisher for {other}"),
    }
}

/// Kafka: tansu's own producer (`tansu cat produce`), which takes one JSON
/// value per record; a body that is not JSON goes as a JSON string, which
/// is just as undecodable as an envelope. One record per call, so one per
/// batch (see `common::TANSU_ONE_RECORD_PER_BATCH`).
fn publish_raw_kafka(bodies: &[Vec<u8>]) {
    for body in bodies {
        let value = serde_json::from_slice::<serde_json::Value>(body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into()));
        produce_with_tansu(&serde_json::json!({ "value": value }).to_string());
    }
}

fn produce_with_tansu(lines: &str) {
    let mut child = Command::new(tansu())
        .args([
            "cat",
            "produce",
            "--broker",
            "tcp://127.0.0.1:9092",
            "rel.item",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("Kafka (tansu): cannot run `{} cat produce`: {e}", tansu()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("records");
    let out = child.wait_with_output().expect("tansu cat");
    assert!(
        out.status.success(),
        "tansu cat produce: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tansu binary: `EVGEN_TANSU`, else where scripts/test.sh installs it,
/// else `tansu` on the PATH.
fn tansu() -> String {
    std::env::var("EVGEN_TANSU").unwrap_or_else(|_| {
        let cached = "/var/cache/evgen/tansu/bin/tansu";
        if std::path::Path::new(cached).exists() {
            cached.to_string()
        } else {
            "tansu".to_string()
        }
    })
}

/// A broker process of the test's own, for faults the machine's broker
/// cannot show: Redis that keeps its streams on disk (the machine's keeps
/// nothing), tansu that advertises a proxy's address. Killed at the end.
struct OwnBroker {
    name: &'static str,
    argv: Vec<String>,
    port: u16,
    child: Child,
}

impl OwnBroker {
    fn start(name: &'static str, port: u16, argv: Vec<String>) -> OwnBroker {
        let child = Self::spawn(name, &argv);
        let own = OwnBroker {
            name,
            argv,
            port,
            child,
        };
        own.wait_listening();
        own
    }

    fn spawn(name: &str, argv: &[String]) -> Child {
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start `{}`: {e}", argv[0]))
    }

    fn wait_listening(&self) {
        wait_for_port(self.port, Duration::from_secs(30), || {
            format!("{} did not listen on 127.0.0.1:{}", self.name, self.port)
        });
    }

    /// Stop it as an operator would (SIGTERM), then start it again.
    fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_secs(2));
        self.child = Self::spawn(self.name, &self.argv);
        self.wait_listening();
    }

    /// Redis with an append-only file fsynced on every write, as Redis
    /// Streams run in production.
    fn durable_redis() -> OwnBroker {
        let port = free_port();
        let dir = common::scratch(&format!("redis-aof-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            dir.to_str().expect("utf-8"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ];
        OwnBroker::start("Redis", port, argv.map(String::from).to_vec())
    }

    /// tansu on a port of its own that tells clients to connect through
    /// `advertised` (a proxy), so every connection crosses the proxy.
    fn tansu_behind(port: u16, advertised: u16) -> OwnBroker {
        let argv = vec![
            tansu(),
            "broker".into(),
            "--listener-url".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url".into(),
            format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        OwnBroker::start("Kafka (tansu)", port, argv)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A NATS request with an empty payload; waits for the reply.
fn nats_request(subject: &str) {
    let mut s = TcpStream::connect("127.0.0.1:4222").expect("nats");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("INFO");
    let msg = format!(
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.evgen-test 1\r\nPUB {subject} _INBOX.evgen-test 0\r\n\r\n"
    );
    s.write_all(msg.as_bytes()).expect("request");
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.starts_with("MSG") {
            break;
        }
        if line.starts_with("PING") {
            s.write_all(b"PONG\r\n").expect("PONG");
        }
    }
}

/// One Redis command over RESP; returns the first reply line.
fn redis_command(args: &[&[u8]]) -> String {
    let mut s = TcpStream::connect("127.0.0.1:6379").expect("redis");
    let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        cmd.extend(format!("${}\r\n", a.len()).as_bytes());
        cmd.extend(*a);
        cmd.extend(b"\r\n");
    }
    s.write_all(&cmd).expect("redis command");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("reply");
    reply
}

/// NATS core protocol: the stream captures the subject.
fn publish_raw_nats(bodies: &[Vec<u8>]) {
    let mut s = TcpStream::connect("127.0.0.1:4222").expect("nats");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut info = String::new();
    r.read_line(&mut info).expect("INFO");
    s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .expect("CONNECT");
    for body in bodies {
        s.write_all(format!("PUB rel.item.created {}\r\n", body.len()).as_bytes())
            .expect("PUB");
        s.write_all(body).expect("body");
        s.write_all(b"\r\n").expect("crlf");
    }
    s.write_all(b"PING\r\n").expect("PING");
    let mut line = String::new();
    while !line.starts_with("PONG") {
        line.clear();
        r.read_line(&mut line).expect("PONG");
        assert!(!line.starts_with("-ERR"), "{line}");
    }
}

/// Redis RESP: XADD to the event's stream with the service's field names.
fn publish_raw_redis(bodies: &[Vec<u8>]) {
    let mut s = TcpStream::connect("127.0.0.1:6379").expect("redis");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for body in bodies {
        let args: [&[u8]; 7] = [
            b"XADD",
            b"rel.item",
            b"*",
            b"type",
            b"item.created",
            b"body",
            body,
        ];
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            cmd.extend(format!("${}\r\n", a.len()).as_bytes());
            cmd.extend(a);
            cmd.extend(b"\r\n");
        }
        s.write_all(&cmd).expect("XADD");
        let mut reply = String::new();
        r.read_line(&mut reply).expect("reply");
        assert!(reply.starts_with('$'), "XADD: {reply}");
        reply.clear();
        r.read_line(&mut reply).expect("id");
    }
}

fn publish_raw_amqp(bodies: &[Vec<u8>]) {
    rt().block_on(async {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        for body in bodies {
            let props = lapin::BasicProperties::default().with_delivery_mode(2);
            let confirm = ch
                .basic_publish(
                    "rel".into(),
                    "item.created".into(),
                    lapin::options::BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .expect("publish");
            assert!(confirm.await.expect("confirm").is_ack());
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Restart the broker in place, keeping its data; always leaves it running.
fn restart_broker(broker: &str) {
    match broker {
        "rabbitmq" => {
            struct StartApp;
            impl Drop for StartApp {
                fn drop(&mut self) {
                    let _ = Command::new("rabbitmqctl").arg("start_app").output();
                }
            }
            let _guard = StartApp;
            let out = Command::new("rabbitmqctl")
                .arg("stop_app")
                .output()
                .expect("rabbitmqctl");
            assert!(
                out.status.success(),
                "rabbitmqctl stop_app: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        "nats" => {
            // Restart the running server with its own command line (its
            // JetStream store directory keeps the streams).
            let pid = String::from_utf8_lossy(
                &Command::new("pgrep")
                    .args(["-o", "-x", "nats-server"])
                    .output()
                    .expect("pgrep")
                    .stdout,
            )
            .trim()
            .to_string();
            assert!(!pid.is_empty(), "no nats-server process to restart");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let start = Instant::now();
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(2));
            // Detached through a shell into a session of its own, so the
            // server outlives the test (and a kill of the test's process
            // group) like the one it replaces.
            let quoted: Vec<String> = argv
                .iter()
                .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
                .collect();
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "setsid nohup {} >/dev/null 2>&1 </dev/null &",
                    quoted.join(" ")
                ))
                .status()
                .expect("restart nats-server");
            assert!(status.success());
        }
        other => panic!("{other} keeps no data across a restart here; no restart test"),
    }
    let (_, port, _, _, name, hint) = broker_info(broker);
    wait_for_port(*port, Duration::from_secs(60), || {
        format!("{name} did not come back (start it: `{hint}`)")
    });
}

/// Wait until something listens on 127.0.0.1:`port`; fail with `failure()`
/// after `timeout`.
fn wait_for_port(port: u16, timeout: Duration, failure: impl Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "{}", failure());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fresh_database() {
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    );
    psql("postgres", &format!("CREATE DATABASE {DB}"));
    psql(
        DB,
        "CREATE TABLE effects (event_id text NOT NULL, item_id text NOT NULL, n bigint NOT NULL,
            attempt int NOT NULL, instance text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE failing_items (item_id text PRIMARY KEY, fail_until int NOT NULL)",
    );
}

/// Put `n` events into the outbox (as `outbox::enqueue` writes them), 100 keys.
fn seed(n: usize, offset: usize) {
    psql(
        DB,
        &format!(
            "INSERT INTO evgen_outbox (id, aggregatetype, aggregateid, type, payload)
             SELECT u, 'item', 'k' || (i % 100), 'item.created', jsonb_build_object(
               'specversion', '1.0', 'id', u::text, 'source', '/rel', 'type', 'item.created',
               'time', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
               'datacontenttype', 'application/json', 'dataversion', '1.0.0',
               'partitionkey', 'k' || (i % 100),
               'data', jsonb_build_object('item_id', 'k' || (i % 100), 'n', i))
             FROM (SELECT gen_random_uuid() AS u, i FROM generate_series({}, {}) i) s
             ORDER BY i;
             SELECT pg_notify('evgen_outbox', '')",
            offset + 1,
            offset + n
        ),
    );
}

/// (effects rows, distinct events) of the running scenario.
fn effects() -> (usize, usize) {
    let (lo, hi) = *RANGE.lock().unwrap_or_else(|e| e.into_inner());
    let r = psql(
        DB,
        &format!(
            "SELECT count(*) || ',' || count(DISTINCT event_id) FROM effects WHERE n BETWEEN {lo} AND {hi}"
        ),
    );
    let mut it = r.split(',').map(|x| x.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn wait_effects(at_least: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (_, distinct) = effects();
        if distinct >= at_least {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            // Say where the missing events are: still in the outbox (the
            // relay) or published and not handled (the consumer).
            let unpublished = psql(
                DB,
                "SELECT count(*) FROM evgen_outbox WHERE published_at IS NULL",
            );
            panic!(
                "only {distinct} of {at_least} events handled after {timeout:?}; \
                 outbox rows not yet published: {unpublished}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start the fault-test service for `broker`, as `instance`, reaching the
/// broker at `broker_url`.
fn start_service(broker: &str, port: u16, instance: &str, broker_url: &str) -> Service {
    let mut command = Command::new(binary(broker));
    command
        .env(broker_info(broker).2, broker_url)
        .env(
            common::TANSU_ONE_RECORD_PER_BATCH.0,
            common::TANSU_ONE_RECORD_PER_BATCH.1,
        )
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{DB}"),
        )
        .env("INSTANCE", instance)
        .env("RUST_LOG", "info,rel_events=debug");
    let s = Service::start(command, port);
    if broker == "kafka" {
        // tansu sometimes takes minutes to form the consumer group
        // again after its members left (seen once in four runs): the
        // scenarios start once this member has its partitions.
        let start = Instant::now();
        s.wait_line("partitions assigned", Duration::from_secs(400));
        let waited = start.elapsed();
        if waited > Duration::from_secs(30) {
            println!("kafka: the consumer group formed after {waited:.0?}");
        }
    }
    s
}

/// A TCP proxy in front of RabbitMQ that can cut every connection.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pipes = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                c.lock().expect("lock").extend([client, server]);
                for (from, to) in pipes {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy { port, conns, stop }
    }

    fn cut_all(&self) -> usize {
        let mut conns = self.conns.lock().expect("lock");
        for c in conns.iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let n = conns.len();
        conns.clear();
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.cut_all();
    }
}

fn report(
    broker: &str,
    scenario: &str,
    events: usize,
    elapsed: Duration,
    extra: &str,
) -> (usize, usize) {
    // Late duplicates would show up shortly after the last event.
    std::thread::sleep(Duration::from_secs(2));
    let (rows, distinct) = effects();
    let lost = events.saturating_sub(distinct);
    let duplicates = rows - distinct;
    println!(
        "reliability[{broker}/{scenario}]: events={events} handled={distinct} lost={lost} duplicate_effects={duplicates} elapsed={:.1}s{extra}",
        elapsed.as_secs_f64()
    );
    (lost, duplicates)
}

const N: usize = 10_000;

fn connections_cut_by_a_proxy_lose_nothing(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    // Kafka clients connect to the address the broker advertises, not the
    // one they were given: the proxied tansu advertises the proxy.
    let (proxy, _own) = if broker == "kafka" {
        let own_port = free_port();
        let proxy = Proxy::start(own_port);
        let own = OwnBroker::tansu_behind(own_port, proxy.port);
        (proxy, Some(own))
    } else {
        (Proxy::start(broker_info(broker).1), None)
    };
    let svc = start_service(broker, port, "a", &url(broker, proxy.port));
    let start = Instant::now();
    seed(N, offset as usize);
    // The relay publishes the whole backlog within about a second: cut
    // every connection every 25 ms meanwhile, so that batches fail while
    // the next one is selected or in flight.
    let mut cuts = 0;
    while start.elapsed() < Duration::from_millis(1_500) {
        cuts += proxy.cut_all();
        std::thread::sleep(Duration::from_millis(25));
    }
    for fraction in [5, 35, 65] {
        wait_effects(N * fraction / 100, Duration::from_secs(180));
        cuts += proxy.cut_all();
    }
    let recover = Instant::now();
    wait_effects(N, Duration::from_secs(240));
    let recovery = recover.elapsed();
    let redelivered = svc.count("already processed");
    let relay_failures = svc.count("outbox relay failed");
    let (lost, dups) = report(
        broker,
        "proxy-cuts",
        N,
        start.elapsed(),
        &format!(
            " connections_cut={cuts} redelivered={redelivered} relay_failures={relay_failures} last_recovery={:.1}s",
            recovery.as_secs_f64()
        ),
    );
    assert_eq!((lost, dups), (0, 0));
    if broker == "redis" {
        // Each cut fails the relay's batch in flight while the next one
        // is being selected: no key's events may overtake each other.
        assert_published_in_key_order("rel.item", N);
    }
}

fn a_broker_restart_loses_nothing(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    // The machine's Redis keeps nothing on disk: restart one that does.
    let mut own = (broker == "redis").then(OwnBroker::durable_redis);
    let target = own.as_ref().map_or(broker_info(broker).1, |o| o.port);
    let svc = start_service(broker, port, "a", &url(broker, target));
    let start = Instant::now();
    seed(N, offset as usize);
    wait_effects(N / 4, Duration::from_secs(180));
    let down = Instant::now();
    match own.as_mut() {
        Some(own) => own.restart(),
        None => restart_broker(broker),
    }
    let (_, before) = effects();
    wait_effects(before + 1, Duration::from_secs(120));
    let recovery = down.elapsed();
    wait_effects(N, Duration::from_secs(240));
    let redelivered = svc.count("already processed");
    let (lost, dups) = report(
        broker,
        "broker-restart",
        N,
        start.elapsed(),
        &format!(
            " redelivered={redelivered} time_to_recover={:.1}s",
            recovery.as_secs_f64()
        ),
    );
    assert_eq!((lost, dups), (0, 0));
}

fn sigkill_mid_stream_loses_nothing(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    let own = url(broker, broker_info(broker).1);
    let mut svc = start_service(broker, port, "a", &own);
    let start = Instant::now();
    seed(N, offset as usize);
    wait_effects(N * 3 / 10, Duration::from_secs(180));
    svc.kill9();
    let killed = Instant::now();
    let svc = start_service(broker, port, "a", &own);
    let (_, before) = effects();
    wait_effects(before + 1, Duration::from_secs(120));
    let recovery = killed.elapsed();
    wait_effects(N, Duration::from_secs(240));
    let redelivered = svc.count("already processed");
    let (lost, dups) = report(
        broker,
        "sigkill",
        N,
        start.elapsed(),
        &format!(
            " redelivered_after_restart={redelivered} time_to_recover={:.1}s",
            recovery.as_secs_f64()
        ),
    );
    assert_eq!((lost, dups), (0, 0));
}

fn poison_messages_go_to_the_dead_letter_queue(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    let svc = start_service(broker, port, "a", &url(broker, broker_info(broker).1));
    let valid = 2_000;
    seed(valid, offset as usize);
    let kinds = 20;
    let mut bodies = Vec::new();
    for i in 0..kinds {
        let mut garbage = vec![0xff, 0xfe, b'x', i as u8];
        garbage.extend(format!(" tag-{offset}").as_bytes());
        bodies.push(garbage);
        bodies.push(
            format!(r#"{{"specversion":"1.0","id":"bad-{offset}-{i}","tag":"tag-{offset}","source":"/t","type":"item.created","time":"2026-11-29T00:00:00Z","datacontenttype":"application/json","dataversion":"1.0.0","data":{{"item_id":{i}}}}}"#)
                .into_bytes(),
        );
        bodies.push(
            format!(r#"{{"specversion":"1.0","id":"other-{offset}-{i}","tag":"tag-{offset}","source":"/t","type":"item.deleted","time":"2026-11-29T00:00:00Z","datacontenttype":"application/json","dataversion":"1.0.0","data":{{}}}}"#)
                .into_bytes(),
        );
    }
    // A Kafka topic carries every event of its entity, and other services
    // may produce ones this service does not consume: those are skipped,
    // not dead-lettered. Elsewhere only this service's events are routed
    // to it, so an unknown one is a poison message.
    let unknown_expected = if broker == "kafka" { 0 } else { kinds };
    let start = Instant::now();
    publish_raw(broker, &bodies);
    wait_effects(valid, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (undecodable, invalid, unknown) = loop {
        let (status, body) = svc.http("GET", "/admin/dead-letters?limit=100000", "");
        assert_eq!(status, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        let tag = format!("tag-{offset}");
        let ours = |d: &&serde_json::Value| d["body"].as_str().is_some_and(|b| b.contains(&tag));
        let count = |r: &str| {
            list.iter()
                .filter(ours)
                .filter(|d| d["reason"] == r)
                .count()
        };
        let counts = (
            count("undecodable"),
            count("schema-invalid"),
            count("unknown-event"),
        );
        if counts == (kinds, kinds, unknown_expected) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let (lost, dups) = report(
        broker,
        "poison",
        valid,
        start.elapsed(),
        &format!(
            " poison={} dlq_undecodable={undecodable} dlq_schema_invalid={invalid} dlq_unknown_event={unknown}",
            3 * kinds
        ),
    );
    assert_eq!((lost, dups), (0, 0));
    assert_eq!(
        (undecodable, invalid, unknown),
        (kinds, kinds, unknown_expected)
    );
    assert_eq!(svc.count("panicked"), 0);
}

fn retries_back_off_then_dead_letter_then_replay(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    let svc = start_service(broker, port, "a", &url(broker, broker_info(broker).1));
    psql(
        DB,
        "INSERT INTO failing_items VALUES ('flaky', 3), ('doomed', 1000)",
    );
    let t0 = Instant::now();
    let (status, body) = svc.http(
        "POST",
        "/events/item.created",
        &format!(r#"{{"item_id":"flaky","n":{}}}"#, offset + 1),
    );
    assert_eq!(status, 202, "{body}");
    let (status, body) = svc.http(
        "POST",
        "/events/item.created",
        &format!(r#"{{"item_id":"doomed","n":{}}}"#, offset + 2),
    );
    assert_eq!(status, 202, "{body}");
    wait_effects(1, Duration::from_secs(30));
    let flaky_after = t0.elapsed();
    let attempt = psql(DB, "SELECT attempt FROM effects WHERE item_id = 'flaky'");
    assert_eq!(attempt, "3", "flaky must succeed on its third attempt");
    // Backoff 200 ms then 400 ms: at least 0.6 s, loosely bounded above.
    assert!(
        flaky_after >= Duration::from_millis(550),
        "retried too fast: {flaky_after:?}"
    );
    assert!(
        flaky_after < Duration::from_secs(15),
        "retried too slowly: {flaky_after:?}"
    );

    // doomed: 4 attempts (200 + 400 + 800 ms of backoff), then the DLQ.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (_, body) = svc.http("GET", "/admin/dead-letters?limit=100000", "");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        let ours = format!("\"n\":{}", offset + 2);
        if let Some(d) = list.into_iter().find(|d| {
            d["body"]
                .as_str()
                .is_some_and(|b| b.contains("doomed") && b.contains(&ours))
        }) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "doomed never reached the dead-letter queue"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(dead["reason"], "retries-exhausted");
    assert_eq!(dead["attempts"], 4);
    assert_eq!(dead["event"], "item.created");
    assert!(
        dead["error"]
            .as_str()
            .is_some_and(|e| e.contains("doomed is failing")),
        "{dead}"
    );
    assert!(
        !dead["first_failure"].as_str().unwrap_or("").is_empty(),
        "{dead}"
    );
    let dlq_after = t0.elapsed();

    psql(DB, "DELETE FROM failing_items WHERE item_id = 'doomed'");
    let (status, body) = svc.http("POST", "/admin/dead-letters/replay", "");
    assert_eq!(status, 200, "{body}");
    let replayed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(replayed["replayed"].as_u64().unwrap_or(0) >= 1, "{body}");
    wait_effects(2, Duration::from_secs(30));
    assert_eq!(
        psql(DB, "SELECT attempt FROM effects WHERE item_id = 'doomed'"),
        "1",
        "replay resets the attempt count"
    );
    println!(
        "reliability[{broker}/retry]: flaky handled on attempt 3 after {:.2}s (backoff 0.2+0.4 s); doomed dead-lettered after {:.2}s (4 attempts), replayed and handled",
        flaky_after.as_secs_f64(),
        dlq_after.as_secs_f64()
    );
}

fn two_instances_share_the_work_without_duplicates(broker: &str, port: u16) {
    let _g = serial();
    require_services(broker);
    fresh_database();
    purge_queues(broker);
    let offset = begin(N);
    let own = url(broker, broker_info(broker).1);
    let mut a = start_service(broker, port, "a", &own);
    let mut b = start_service(broker, port + 1, "b", &own);
    let start = Instant::now();
    seed(N, offset as usize);
    wait_effects(N, Duration::from_secs(240));
    let elapsed = start.elapsed();
    let by = |i: &str| {
        psql(
            DB,
            &format!("SELECT count(*) FROM effects WHERE instance = '{i}'"),
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    let (na, nb) = (by("a"), by("b"));
    let redelivered = a.count("already processed") + b.count("already processed");
    let published_once = psql(
        DB,
        "SELECT count(*) FROM evgen_outbox WHERE published_at IS NOT NULL",
    );
    let (lost, dups) = report(
        broker,
        "two-instances",
        N,
        elapsed,
        &format!(
            " instance_a={na} instance_b={nb} delivered_twice={redelivered} outbox_rows_published={published_once}"
        ),
    );
    assert_eq!((lost, dups), (0, 0));
    assert!(na > 0 && nb > 0, "work was not shared: a={na} b={nb}");
    if broker == "kafka" {
        // A Kafka rebalance moves partitions with messages in flight: the
        // new owner reads them again from the committed offset while the
        // old one finishes them (the inbox keeps their effect single).
        // At most what was in flight: the prefetch of both instances.
        assert!(
            redelivered <= 2 * 64,
            "{redelivered} events delivered twice, more than were in flight"
        );
    } else {
        assert_eq!(redelivered, 0, "an event was published or delivered twice");
    }
    if broker == "redis" {
        // Two relays, each with two batches in flight, shared 100 keys:
        // the stream is the broker's log in append order, so it shows
        // whether any key's events were published out of order.
        let again = assert_published_in_key_order("rel.item", N);
        assert_eq!(again, 0, "events were published twice without a fault");
    }
    // Graceful shutdown: both exit cleanly on SIGTERM.
    assert!(a.terminate(), "instance a did not shut down cleanly");
    assert!(b.terminate(), "instance b did not shut down cleanly");
}

/// Several relays publish one backlog with two batches each in flight:
/// every key's events reach the broker in the order they were written.
/// The other scenarios run one relay per instance, whose interleavings
/// rarely show a race between relays; this one runs four relays in one
/// process over 40,000 rows, three times. Redis only: the stream is the
/// broker's log in append order, and the protocol is the same for every
/// broker (it is the relay's SQL).
fn relays_publish_each_key_in_order(broker: &str, _port: u16) {
    const ROWS: usize = 40_000;
    let _g = serial();
    require_services(broker);
    let bin = binary(broker);
    let example = bin.with_file_name("relays");
    std::fs::copy(common::target_dir().join("debug/examples/relays"), &example)
        .expect("copy the relays example");
    for round in 1..=3 {
        fresh_database();
        purge_queues(broker);
        let offset = begin(ROWS);
        let mut relays = Command::new(&example)
            .env(broker_info(broker).2, url(broker, broker_info(broker).1))
            .env(
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:5432/{DB}"),
            )
            .env("ROWS", ROWS.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the relays");
        let mut out = BufReader::new(relays.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("relays output");
        assert_eq!(line.trim(), "relays running", "the relays did not start");
        let start = Instant::now();
        seed(ROWS, offset as usize);
        let status = loop {
            if let Some(status) = relays.try_wait().expect("relays") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(240) {
                let _ = relays.kill();
                let _ = relays.wait();
                panic!("the relays did not publish {ROWS} rows in 240 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "the relays failed: {status}");
        eprintln!(
            "reliability[{broker}/relays]: round {round}: {ROWS} rows published by 4 relays in {:.1}s",
            start.elapsed().as_secs_f64()
        );
        let again = assert_published_in_key_order("rel.item", ROWS);
        assert_eq!(again, 0, "events were published twice without a fault");
    }
}

/// Every key's events first appear in `stream` in the order they were
/// enqueued (`data.n` ascending per `data.item_id`), and all `expected`
/// are there. A batch that failed after some of its messages reached the
/// broker is published again, so an event may appear twice (the inbox
/// absorbs that); what must never happen is an event appearing for the
/// first time after a later event of its key. Returns how many appeared
/// again.
fn assert_published_in_key_order(stream: &str, expected: usize) -> usize {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "--raw", "XRANGE", stream, "-", "+"])
        .output()
        .expect("redis-cli (apt install redis-tools)");
    assert!(out.status.success(), "redis-cli XRANGE failed");
    let text = String::from_utf8_lossy(&out.stdout);
    // Per key: the highest `n` seen so far and every `n` seen.
    let mut keys: HashMap<String, (i64, HashSet<i64>)> = HashMap::new();
    let (mut seen, mut again) = (0, 0);
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let body: serde_json::Value = serde_json::from_str(line).expect("an envelope");
        let key = body["data"]["item_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = body["data"]["n"].as_i64().unwrap_or_default();
        let (highest, ns) = keys
            .entry(key.clone())
            .or_insert((i64::MIN, HashSet::new()));
        if !ns.insert(n) {
            again += 1;
            continue;
        }
        assert!(
            n > *highest,
            "key {key}: event n={n} was first published after n={highest}"
        );
        *highest = n;
        seen += 1;
    }
    assert!(
        seen >= expected,
        "only {seen} of {expected} events in {stream}"
    );
    eprintln!(
        "redis: {seen} events in {stream} ({again} published again), in key order for {} keys",
        keys.len()
    );
    again
}

/// One `#[test]` per broker and scenario, all from the code above.
macro_rules! scenarios {
    ($broker:literal, $port:literal: $($scenario:ident),+) => {
        $(
            #[test]
            fn $scenario() {
                super::$scenario($broker, $port + 10 * (stringify!($scenario).len() as u16 % 7));
            }
        )+
    };
}

mod rabbitmq {
    scenarios!("rabbitmq", 18500:
        connections_cut_by_a_proxy_lose_nothing,
        a_broker_restart_loses_nothing,
        sigkill_mid_stream_loses_nothing,
        poison_messages_go_to_the_dead_letter_queue,
        retries_back_off_then_dead_letter_then_replay,
        two_instances_share_the_work_without_duplicates);
}

mod nats {
    scenarios!("nats", 18600:
        connections_cut_by_a_proxy_lose_nothing,
        a_broker_restart_loses_nothing,
        sigkill_mid_stream_loses_nothing,
        poison_messages_go_to_the_dead_letter_queue,
        retries_back_off_then_dead_letter_then_replay,
        two_instances_share_the_work_without_duplicates);
}

// The machine's Redis keeps nothing on disk; the restart scenario runs a
// Redis of its own with an append-only file (`OwnBroker::durable_redis`).
mod redis {
    scenarios!("redis", 18700:
        connections_cut_by_a_proxy_lose_nothing,
        a_broker_restart_loses_nothing,
        sigkill_mid_stream_loses_nothing,
        poison_messages_go_to_the_dead_letter_queue,
        retries_back_off_then_dead_letter_then_replay,
        two_instances_share_the_work_without_duplicates,
        relays_publish_each_key_in_order);
}

// Kafka runs on tansu, whose only storage that works here is in memory: a
// restart loses every topic by design, so there is no restart scenario.
// The proxy scenario runs a tansu of its own that advertises the proxy;
// poison messages are produced with `tansu cat produce`. Services run with
// one record per batch around a tansu fetch bug (see
// `common::TANSU_ONE_RECORD_PER_BATCH`).
mod kafka {
    scenarios!("kafka", 18800:
        connections_cut_by_a_proxy_lose_nothing,
        sigkill_mid_stream_loses_nothing,
        poison_messages_go_to_the_dead_letter_queue,
        retries_back_off_then_dead_letter_then_replay,
        two_instances_share_the_work_without_duplicates);
}
