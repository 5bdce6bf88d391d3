#!/usr/bin/env bash
# The whole test suite, from a fresh machine: starts the brokers the tests
# need when they are not running (never stops what it did not start),
# installs the Kafka-compatible broker (tansu) once into a cache, then runs
# formatting, lints and every test layer. Run from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${EVGEN_CACHE:-/var/cache/evgen}
mkdir -p "$CACHE"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export EVGEN_TEST_TARGET_DIR=${EVGEN_TEST_TARGET_DIR:-$CACHE/target-generated}
export EVGEN_TEST_WORK_DIR=${EVGEN_TEST_WORK_DIR:-$CACHE/work}
export CARGO_PROFILE_DEV_DEBUG=0
export CARGO_TERM_COLOR=never

log() { printf '==> %s\n' "$*"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port name seconds
  for _ in $(seq 1 "$3"); do listening "$1" && return 0; sleep 1; done
  echo "error: $2 did not start listening on 127.0.0.1:$1" >&2; return 1
}
apt_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

command -v cargo >/dev/null || { echo "error: cargo is missing: install Rust (rustup) first" >&2; exit 1; }
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

# PostgreSQL
if ! listening 5432; then
  apt_install pg_ctlcluster postgresql
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port 5432 PostgreSQL 60
fi
# RabbitMQ
if ! listening 5672; then
  apt_install rabbitmq-server rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ 90
fi
# NATS with JetStream
if ! listening 4222; then
  apt_install nats-server nats-server
  log "starting NATS"
  mkdir -p "$CACHE/nats"
  setsid nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$CACHE/nats" >"$CACHE/nats.log" 2>&1 &
  wait_port 4222 NATS 30
fi
# Redis (the restart fault test also runs a redis-server of its own)
apt_install redis-server redis-server
if ! listening 6379; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no
  wait_port 6379 Redis 30
fi
# Kafka protocol: tansu, built once into the cache (minutes the first time).
TANSU="$CACHE/tansu/bin/tansu"
export EVGEN_TANSU="$TANSU" # the fault tests run tansu's producer and a tansu of their own
if [ ! -x "$TANSU" ]; then
  log "building tansu 0.6.0 into $CACHE/tansu (first run only)"
  cargo install tansu --version 0.6.0 --locked --features dynostore --root "$CACHE/tansu" --quiet
fi
if ! listening 9092; then
  log "starting tansu (Kafka protocol) on 127.0.0.1:9092"
  setsid nohup "$TANSU" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ >"$CACHE/tansu.log" 2>&1 &
  wait_port 9092 tansu 60
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test (unit, snapshots, CLI, compile, corpus, end-to-end, fault tests)"
cargo test --no-fail-fast -- --test-threads="${EVGEN_TEST_THREADS:-2}"
