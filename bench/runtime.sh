#!/usr/bin/env bash
# Runtime benchmarks: the generated publisher, subscriber and outbox relay
# against raw clients on the brokers running on 127.0.0.1 (see the README,
# "Runtime benchmarks"). Builds evgen, generates one events crate per broker
# and outbox setting into bench/runtime/generated/, builds the bench in
# release and runs it; prints markdown tables.
#
#   bash bench/runtime.sh [--broker rabbitmq|nats|redis|kafka]... [--runs N]
#                         [--count N] [--batch N] [--latency-secs S]
#                         [--only publish,publish-nv,consume,consume-nv,relay,latency]
set -euo pipefail
cd "$(dirname "$0")/.."

BROKERS=()
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) BROKERS+=("$2"); shift 2 ;;
    --runs|--count|--batch|--latency-secs|--rate|--only) ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#BROKERS[@]} -gt 0 ] || BROKERS=(rabbitmq nats redis kafka)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/evgen/target-bench}
export CARGO_PROFILE_DEV_DEBUG=0
export CARGO_TERM_COLOR=never

echo "==> building evgen (release)" >&2
cargo build --release --quiet --bin evgen
EVGEN="$CARGO_TARGET_DIR/release/evgen"

# One events crate per broker and outbox setting, from one catalog: only
# the service name, broker, outbox and exchange differ. All are generated
# (the bench's manifest names every one); only the requested brokers build.
GEN=bench/runtime/generated
rm -rf "$GEN"
for b in rabbitmq nats redis kafka; do
  for outbox in none postgres; do
    name="bench-$b"; [ "$outbox" = postgres ] && name="$name-outbox"
    dir="$GEN/$name"
    "$EVGEN" new "$dir" --catalog bench/runtime/catalog/evgen.yaml --broker "$b" \
      --outbox "$outbox" --name "$name" >/dev/null
    sed -i "s/^  exchange: .*/  exchange: ${name//-/_}/" "$dir/evgen.yaml"
    "$EVGEN" generate --dir "$dir" >/dev/null
    # Only the events crate is used: drop the service crate and workspace.
    rm -rf "$dir/service" "$dir/Cargo.toml" "$dir/Dockerfile"
  done
done

FEATURES=$(IFS=,; echo "${BROKERS[*]}")
echo "==> building the bench (release; features $FEATURES)" >&2
(cd bench/runtime && cargo build --release --quiet --no-default-features --features "$FEATURES")

echo "==> running" >&2
"$CARGO_TARGET_DIR/release/evgen-bench-runtime" run --brokers "$FEATURES" ${ARGS[@]+"${ARGS[@]}"}
