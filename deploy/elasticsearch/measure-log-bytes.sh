#!/usr/bin/env bash
# What the services' ECS log lines weigh per order: the figure the ILM ages in
# deploy/elasticsearch/ilm-policy.json and the daily cost in deploy/README.md come from.
#
# Runs the four services with `ordertrail up --free-ports` in a scratch directory (SQLite, the
# trace console), places ORDERS orders through the gateway with `ordertrail load` (its default
# mix of captured, declined and out-of-stock orders, reads and retries), stops them, and prints
# the log lines and bytes per order, per service and in total, as the services wrote them to
# stdout (what Filebeat reads). No Docker, no Elasticsearch.
#
#   cargo build --release && deploy/elasticsearch/measure-log-bytes.sh [ORDERS]
#   ORDERTRAIL=target/debug/ordertrail deploy/elasticsearch/measure-log-bytes.sh 500
#
# The log lines are the same in a debug and a release build; only the time it takes differs.
set -euo pipefail

orders="${1:-2000}"
bin="$(realpath "${ORDERTRAIL:-target/release/ordertrail}")"
[[ -x "$bin" ]] || { echo "no $bin: cargo build --release first, or set ORDERTRAIL" >&2; exit 1; }

work="$(mktemp -d)"
up_pid=""
cleanup() {
  [[ -n "$up_pid" ]] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
"$bin" up --free-ports >up.out 2>&1 &
up_pid=$!
for _ in $(seq 1 120); do
  grep -q '^ports:' up.out && break
  kill -0 "$up_pid" 2>/dev/null || { cat up.out >&2; exit 1; }
  sleep 0.5
done
port_of() { grep '^ports:' up.out | grep -o "$1 [0-9]*" | cut -d' ' -f2; }
gateway="$(port_of gateway)"
inventory="$(port_of inventory)"
[[ -n "$gateway" && -n "$inventory" ]] || { cat up.out >&2; exit 1; }

"$bin" load --gateway-url "http://127.0.0.1:$gateway" --inventory-url "http://127.0.0.1:$inventory" \
  --orders "$orders" --concurrency 8 >load.out 2>load.err || { cat load.out load.err >&2; exit 1; }

# Stop the services so that every line is written out.
kill -INT "$up_pid"
wait "$up_pid" 2>/dev/null || true
up_pid=""

for file in var/log/*.log; do
  printf '%s %d %d\n' "$(basename "$file" .log)" "$(wc -l <"$file")" "$(wc -c <"$file")"
done | awk -v orders="$orders" '
  BEGIN { printf "%-10s %10s %12s %12s %12s\n", "service", "lines", "bytes", "lines/order", "bytes/order" }
  { printf "%-10s %10d %12d %12.1f %12.0f\n", $1, $2, $3, $2 / orders, $3 / orders; l += $2; b += $3 }
  END { printf "%-10s %10d %12d %12.1f %12.0f\n", "total", l, b, l / orders, b / orders }'
echo "($orders orders of ordertrail load's default mix; bytes as written to stdout, one JSON line each)"
