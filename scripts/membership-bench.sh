#!/usr/bin/env bash
# Writes while the membership changes: starts a fresh 3-node cluster on loopback (temp data
# dirs), runs `consens bench` (64 clients, 100 B puts) once with the membership steady and once
# while a fourth node joins (--join), is promoted, and a first member is removed, and prints
# both results. Stops everything on exit (trap). It never installs anything.
#
#   scripts/membership-bench.sh        # build (release) and run
#
# Environment: BENCH_SECS=15 (seconds per run), BASE_PORT=24000, CONSENS_BIN=path.
set -euo pipefail

secs=${BENCH_SECS:-15}
base=${BASE_PORT:-24000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CONSENS_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --quiet)
  bin="$root/target/release/consens"
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

ports=("$base" $((base + 10)) $((base + 20)))
for p in "${ports[@]}"; do
  others=$(printf '%s\n' "${ports[@]}" | grep -vx "$p" | sed 's/^/127.0.0.1:/' | paste -sd, -)
  "$bin" serve --port "$p" --cluster "$others" --data-dir "$tmp/$p" >"$tmp/$p.log" 2>&1 &
  pids+=($!)
done
nodes=$(printf '127.0.0.1:%s\n' $((base + 1)) $((base + 11)) $((base + 21)) | paste -sd, -)
for _ in $(seq 100); do
  "$bin" put ready yes --node "$nodes" >/dev/null 2>&1 && break
  sleep 0.1
done

bench() {
  "$bin" bench --nodes "$nodes" --clients 64 --mix put=100 --value-size 100 \
    --duration "${secs}s" --json
}

echo "## steady"
bench

echo "## during join, promote and remove"
bench >"$tmp/during.json" &
bench_pid=$!
sleep $((secs / 5))
joiner=$((base + 30))
"$bin" serve --port "$joiner" --join "127.0.0.1:$base" --data-dir "$tmp/$joiner" \
  >"$tmp/$joiner.log" 2>&1 &
pids+=($!)
line="127.0.0.1:$((base + 1))"
for _ in $(seq 100); do
  "$bin" member promote 3 --node "$line" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "promoted member 3 at $(date +%T)" >&2
"$bin" member remove 2 --node "$line" >&2
wait "$bench_pid"
cat "$tmp/during.json"
"$bin" member list --node "$line" >&2
