#!/usr/bin/env bash
# Build times of a generated service (the other half of the generator
# benchmark; `cargo bench --bench generate` times evgen itself):
#   1. `evgen new orders` (the example catalog), then a cold `cargo build`
#      of its workspace into an empty target folder;
#   2. `evgen add-event` (one produced event), `evgen generate`, and
#      `cargo build` again: the rebuild a catalog change costs.
# Prints one table row per step: wall time and the number of crates cargo
# compiled. Crates are fetched first, so downloads are not timed.
#
# Usage: bash bench/build.sh [folder]   (default: a new temporary folder)
# EVGEN: the evgen binary to use (default: built here with --release).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
if [ -z "${EVGEN:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    EVGEN="${CARGO_TARGET_DIR:-$root/target}/release/evgen"
fi

svc="$work/orders"
rm -rf "$svc" "$work/target"
"$EVGEN" new "$svc" >/dev/null
# The generated workspace builds into its own, empty target folder.
export CARGO_TARGET_DIR="$work/target"
(cd "$svc" && cargo fetch --quiet)

# Runs `cargo build` in the service; prints "<milliseconds> <crates compiled>".
build() {
    local log="$work/build.log" start end
    start=$(date +%s%N)
    (cd "$svc" && cargo build 2>"$log") || { cat "$log" >&2; exit 1; }
    end=$(date +%s%N)
    echo "$(((end - start) / 1000000)) $(grep -c '^ *Compiling ' "$log" || true)"
}

echo "| step | wall time | crates compiled |"
echo "| --- | --- | --- |"
read -r ms crates < <(build)
printf '| cold `cargo build` of `evgen new orders` | %d.%d s | %s |\n' $((ms / 1000)) $((ms % 1000 / 100)) "$crates"
"$EVGEN" add-event bench.added --field id:uuid --field 'note:string?' --produce --key id \
    --dir "$svc" >/dev/null
"$EVGEN" generate --dir "$svc" >/dev/null
read -r ms crates < <(build)
printf '| `cargo build` after `evgen add-event` + `evgen generate` | %d.%d s | %s |\n' $((ms / 1000)) $((ms % 1000 / 100)) "$crates"
