#!/usr/bin/env bash
# Side-by-side load figures: starts a fresh 3-node consens cluster on loopback (temp data dirs),
# runs the standard matrix with `consens bench`, prints markdown tables, and stops everything
# on exit (trap). If etcd and wrk are installed (Debian: etcd-server, wrk), it also starts a
# 3-node etcd on loopback and runs the same HTTP workload with wrk against consens's HTTP API
# and etcd's JSON gateway, printing both with the ratio. It never installs anything.
#
#   scripts/bench.sh                   # build (release), run everything, print tables
#
# Environment:
#   BENCH_SECS=3        seconds per run
#   BASE_PORT=23000     consens nodes on BASE_PORT, +10, +20 (HTTP P, line P+1, Paxos UDP P);
#                       etcd (if run) on BASE_PORT+100..+105
#   PIPELINE=16         requests in flight per line-protocol client at 64 clients
#                       (the 1-client rows always use 1, to show unloaded latency)
#   KEYS=1000           distinct keys
#   SKIP_ETCD=1         skip the etcd/wrk comparison
#   SKIP_HTTP=1         skip the `consens bench --protocol http` matrix
#   SKIP_MATRIX=1       skip the whole `consens bench` matrix (only the etcd comparison)
#   CONSENS_BIN=path    use this binary instead of building target/release/consens
#
# The standard matrix: 1 and 64 clients x 100 B and 4 KiB values x writes (put=100),
# linearizable reads (get=100) and a 50/50 mix.
set -euo pipefail

secs=${BENCH_SECS:-3}
base=${BASE_PORT:-23000}
pipeline=${PIPELINE:-16}
keys=${KEYS:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${CONSENS_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  bin="$root/target/release/consens"
else
  bin=$CONSENS_BIN
fi

tmp=$(mktemp -d -t consens-bench.XXXXXX)
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

ports=("$base" $((base + 10)) $((base + 20)))
http_nodes=""
line_nodes=""
for p in "${ports[@]}"; do
  http_nodes="${http_nodes:+$http_nodes,}127.0.0.1:$p"
  line_nodes="${line_nodes:+$line_nodes,}127.0.0.1:$((p + 1))"
done

# --- consens cluster -------------------------------------------------------------------------
for p in "${ports[@]}"; do
  others=""
  for q in "${ports[@]}"; do
    [ "$q" = "$p" ] || others="${others:+$others,}127.0.0.1:$q"
  done
  RUST_LOG=${RUST_LOG:-warn} "$bin" serve --port "$p" --cluster "$others" \
    --data-dir "$tmp/consens-$p" >"$tmp/consens-$p.log" 2>&1 &
  pids+=($!)
done

ready=0
for _ in $(seq 1 150); do
  if "$bin" put bench-ready x --node "127.0.0.1:$((base + 1))" --timeout-ms 2000 >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" -ne 1 ]; then
  echo "consens cluster did not become ready; logs:" >&2
  tail -n 20 "$tmp"/consens-*.log >&2
  exit 1
fi

# Put the leader first: one-client rows then measure the leader's own path (a write through a
# follower currently waits for the leader's next heartbeat to learn the decision; see
# docs/benchmarks.md), and the 64-client rows spread over all nodes either way.
leader=$("$bin" status --node "127.0.0.1:$((base + 1))" 2>/dev/null |
  sed -n 's/^ *"leader": "127\.0\.0\.1:\([0-9]*\)".*/\1/p' | sed -n 1p)
if [ -n "$leader" ]; then
  http_nodes="127.0.0.1:$leader"
  line_nodes="127.0.0.1:$((leader + 1))"
  for p in "${ports[@]}"; do
    [ "$p" = "$leader" ] && continue
    http_nodes="$http_nodes,127.0.0.1:$p"
    line_nodes="$line_nodes,127.0.0.1:$((p + 1))"
  done
else
  leader=$base
fi

# jnum FIELD JSON: the first number after "FIELD": in the one-line JSON report.
jnum() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p" <<<"$2" | sed -n 1p; }

cpus=$(nproc 2>/dev/null || echo '?')
echo "## consens bench: 3 nodes on loopback, fsync on, ${secs} s per run, ${cpus} CPUs shared by nodes and load"
echo
echo "Nodes in order (leader first; client i starts at node i mod 3): line $line_nodes"
echo
echo "| protocol | clients | in flight / client | value | workload | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"

run_consens_bench() { # protocol clients pipeline size mix label
  local protocol=$1 clients=$2 pl=$3 size=$4 mix=$5 label=$6 nodes out
  if [ "$protocol" = line ]; then nodes=$line_nodes; else nodes=$http_nodes; fi
  if ! out=$("$bin" bench --protocol "$protocol" --nodes "$nodes" --clients "$clients" \
    --pipeline "$pl" --value-size "$size" --keys "$keys" --mix "$mix" --duration "${secs}s" \
    --key-prefix "b$size/" --json 2>"$tmp/bench.err"); then
    echo "| $protocol | $clients | $pl | $size B | $label | failed: $(head -c 200 "$tmp/bench.err" | tr '\n|' '  ') |||||||"
    return
  fi
  printf '| %s | %s | %s | %s B | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %s |\n' \
    "$protocol" "$clients" "$pl" "$size" "$label" \
    "$(jnum throughput_ops_per_sec "$out")" "$(jnum p50 "$out")" "$(jnum p90 "$out")" \
    "$(jnum p99 "$out")" "$(jnum p999 "$out")" "$(jnum max "$out")" "$(jnum errors_total "$out")"
}

protocols=(line)
[ "${SKIP_HTTP:-}" = 1 ] || protocols+=(http)
[ "${SKIP_MATRIX:-}" = 1 ] && protocols=()
for protocol in ${protocols[@]+"${protocols[@]}"}; do
  for clients in 1 64; do
    if [ "$clients" -eq 1 ] || [ "$protocol" = http ]; then pl=1; else pl=$pipeline; fi
    for size in 100 4096; do
      run_consens_bench "$protocol" "$clients" "$pl" "$size" "put=100" "writes"
      run_consens_bench "$protocol" "$clients" "$pl" "$size" "get=100" "linearizable reads"
      run_consens_bench "$protocol" "$clients" "$pl" "$size" "put=50,get=50" "50/50 mix"
    done
  done
done
echo

# --- etcd comparison (optional) -----------------------------------------------------------------
if [ "${SKIP_ETCD:-}" = 1 ]; then
  echo "etcd comparison skipped (SKIP_ETCD=1)."
  exit 0
fi
missing=""
for tool in etcd wrk curl base64; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "etcd comparison skipped: not installed:$missing (Debian packages: etcd-server, wrk, curl, coreutils)."
  exit 0
fi

e_client=($((base + 100)) $((base + 102)) $((base + 104)))
e_peer=($((base + 101)) $((base + 103)) $((base + 105)))
initial=""
for i in 0 1 2; do initial="${initial:+$initial,}e$i=http://127.0.0.1:${e_peer[$i]}"; done
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$tmp/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${e_client[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${e_client[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${e_peer[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${e_peer[$i]}" \
    --initial-cluster "$initial" --initial-cluster-token consens-bench \
    --initial-cluster-state new >"$tmp/etcd-$i.log" 2>&1 &
  pids+=($!)
done
ready=0
for _ in $(seq 1 150); do
  if curl -sf -m 2 -XPOST "http://127.0.0.1:${e_client[0]}/v3/kv/put" \
    -d '{"key":"cmVhZHk=","value":"eA=="}' >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ "$ready" -ne 1 ]; then
  echo "etcd comparison skipped: etcd did not become ready; log:" >&2
  tail -n 20 "$tmp/etcd-0.log" >&2
  exit 0
fi
etcd_version=$(etcd --version 2>/dev/null | sed -n 1p)
# wrk hits each system's leader, so neither pays for forwarding.
e_leader=${e_client[0]}
for c in "${e_client[@]}"; do
  st=$(curl -sf -m 2 -XPOST "http://127.0.0.1:$c/v3/maintenance/status" -d '{}' || true)
  me=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$st")
  lead=$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$st")
  if [ -n "$me" ] && [ "$me" = "$lead" ]; then e_leader=$c; fi
done

# The wrk scripts: WRK_MODE is put, get, mix or fill (puts of k1, k2, ... kKEYS in turn, again
# and again, so that reads find every key); keys k1..kKEYS; values of WRK_VALUE_SIZE bytes.
cat >"$tmp/consens.lua" <<'EOF'
local keys = tonumber(os.getenv("WRK_KEYS"))
local mode = os.getenv("WRK_MODE")
local body = string.rep("x", tonumber(os.getenv("WRK_VALUE_SIZE")))
local filled = 0
request = function()
  if mode == "fill" then
    filled = filled + 1
    return wrk.format("PUT", "/wrk/k" .. ((filled - 1) % keys + 1), nil, body)
  end
  local path = "/wrk/k" .. math.random(keys)
  if mode == "put" or (mode == "mix" and math.random(2) == 1) then
    return wrk.format("PUT", path, nil, body)
  end
  return wrk.format("GET", path)
end
EOF
cat >"$tmp/etcd.lua" <<'EOF'
local keys = tonumber(os.getenv("WRK_KEYS"))
local mode = os.getenv("WRK_MODE")
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end
local value = b64(string.rep("x", tonumber(os.getenv("WRK_VALUE_SIZE"))))
local names = {}
for i = 1, keys do names[i] = b64("/wrk/k" .. i) end
wrk.method = "POST"
local filled = 0
request = function()
  local key = names[math.random(keys)]
  if mode == "fill" then
    filled = filled + 1
    key = names[(filled - 1) % keys + 1]
  end
  if mode == "put" or mode == "fill" or (mode == "mix" and math.random(2) == 1) then
    return wrk.format("POST", "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. value .. '"}')
  end
  return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
end
EOF

# run_wrk URL SCRIPT CONNS SIZE MODE -> "ops/s p50 p99 non2xx" (latencies in ms)
run_wrk() {
  local url=$1 script=$2 conns=$3 size=$4 mode=$5 threads=2 out
  [ "$conns" -lt 2 ] && threads=1
  out=$(WRK_KEYS=$keys WRK_VALUE_SIZE=$size WRK_MODE=$mode \
    wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$script" "$url" 2>&1) || true
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  echo "${rps:-0} $(to_ms "${p50:-0}") $(to_ms "${p99:-0}") ${bad:-0}"
}

# prefill URL SCRIPT SIZE: writes every key once or more (one wrk thread, so one key counter),
# so that the read runs never ask for a key that was not written.
prefill() {
  local url=$1 script=$2 size=$3 out sent
  out=$(WRK_KEYS=$keys WRK_VALUE_SIZE=$size WRK_MODE=fill \
    wrk -t1 -c4 -d2s -s "$script" "$url" 2>&1) || true
  sent=$(awk '/requests in/ {print $1}' <<<"$out")
  if [ "${sent:-0}" -lt "$keys" ]; then
    echo "warning: prefilling $url wrote ${sent:-0} of $keys keys; reads may miss some" >&2
  fi
}

# to_ms 1.23ms|456.00us|1.2s -> milliseconds
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "%.3f", v }
  }'
}

echo "## HTTP, same wrk load: consens HTTP API vs etcd JSON gateway ($etcd_version), 3 nodes each on loopback, ${secs} s per run"
echo
echo "wrk (2 threads) hits each cluster's leader (consens 127.0.0.1:$leader, etcd 127.0.0.1:$e_leader); etcd reads are its default linearizable range."
echo
echo "| connections | value | workload | consens ops/s | p50 ms | p99 ms | etcd ops/s | p50 ms | p99 ms | consens / etcd | non-2xx (consens, etcd) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for conns in 1 64; do
  for size in 100 4096; do
    prefill "http://127.0.0.1:$leader" "$tmp/consens.lua" "$size"
    prefill "http://127.0.0.1:$e_leader" "$tmp/etcd.lua" "$size"
    for mode in put get mix; do
      case $mode in put) label=writes ;; get) label="linearizable reads" ;; *) label="50/50 mix" ;; esac
      read -r c_rps c_p50 c_p99 c_bad < <(run_wrk "http://127.0.0.1:$leader" "$tmp/consens.lua" "$conns" "$size" "$mode")
      read -r e_rps e_p50 e_p99 e_bad < <(run_wrk "http://127.0.0.1:$e_leader" "$tmp/etcd.lua" "$conns" "$size" "$mode")
      ratio=$(awk -v a="$c_rps" -v b="$e_rps" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')
      printf '| %s | %s B | %s | %.0f | %s | %s | %.0f | %s | %s | %s | %s, %s |\n' \
        "$conns" "$size" "$label" "$c_rps" "$c_p50" "$c_p99" "$e_rps" "$e_p50" "$e_p99" "$ratio" "$c_bad" "$e_bad"
    done
  done
done
