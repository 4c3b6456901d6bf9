#!/usr/bin/env bash
# Runs a local N-node consens cluster on 127.0.0.1 for trying things out.
#
#   scripts/cluster.sh start [N]   build (release) and start N nodes (default 3) on ports 3000, 4000, ...
#   scripts/cluster.sh status [N]  show each node's role, leader and slots (from /_status)
#   scripts/cluster.sh stop [N]    stop the nodes gracefully (SIGTERM), then kill what is left
#
# Node i (0-based) serves HTTP on 3000+1000*i, the line protocol on that port + 1, and Paxos on the
# same UDP port. Data lives in ${CONSENS_CLUSTER_DIR:-./consens-data}/<port>, logs and pids beside it.
# Set BASE_PORT to move the whole cluster (ports BASE_PORT, BASE_PORT+1000, ...).
set -euo pipefail

cmd=${1:-}
n=${2:-3}
base=${BASE_PORT:-3000}
dir=${CONSENS_CLUSTER_DIR:-./consens-data}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/consens"

case "$n" in
  ''|*[!0-9]*) echo "N must be a number, got '$n'" >&2; exit 2 ;;
esac
if [ "$n" -lt 1 ] || [ "$n" -gt 9 ]; then
  echo "N must be between 1 and 9" >&2
  exit 2
fi

port_of() { echo $((base + 1000 * $1)); }

members_except() {
  local me=$1 out="" i
  for ((i = 0; i < n; i++)); do
    [ "$i" -eq "$me" ] && continue
    out="${out:+$out,}http://localhost:$(port_of "$i")"
  done
  echo "$out"
}

start() {
  (cd "$root" && cargo build --release --quiet)
  mkdir -p "$dir"
  local i port
  for ((i = 0; i < n; i++)); do
    port=$(port_of "$i")
    if [ -f "$dir/$port.pid" ] && kill -0 "$(cat "$dir/$port.pid")" 2>/dev/null; then
      echo "node $port already running (pid $(cat "$dir/$port.pid"))"
      continue
    fi
    local cluster
    cluster=$(members_except "$i")
    PORT=$port CLUSTER=$cluster DATA_DIR="$dir/$port" RUST_LOG=${RUST_LOG:-info} \
      nohup "$bin" serve >"$dir/$port.log" 2>&1 &
    echo $! >"$dir/$port.pid"
    echo "node $port started (pid $!, log $dir/$port.log)"
  done
  echo "try: curl -XPUT localhost:$(port_of 0)/mykey -d mydata; curl localhost:$(port_of $((n - 1)))/mykey"
}

status() {
  local i port
  for ((i = 0; i < n; i++)); do
    port=$(port_of "$i")
    if [ -f "$dir/$port.pid" ] && kill -0 "$(cat "$dir/$port.pid")" 2>/dev/null; then
      printf '%s: ' "$port"
      curl -s --max-time 2 "localhost:$port/_status" || printf 'not answering'
      echo
    else
      echo "$port: stopped"
    fi
  done
}

stop() {
  local i port pid
  for ((i = 0; i < n; i++)); do
    port=$(port_of "$i")
    [ -f "$dir/$port.pid" ] || continue
    pid=$(cat "$dir/$port.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      echo "node $port stopped"
    fi
    rm -f "$dir/$port.pid"
  done
}

case "$cmd" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop|status [N]" >&2; exit 2 ;;
esac
