#!/usr/bin/env bash
# Long chaos runs (issue 6): Jepsen-style runs of real 3- and 5-node clusters under the nemesis,
# one seed after another, for as long as asked, then whole-cluster kill -9 cycles, then
# whole-cluster power cuts (root only: each node's data dir on a loop-mounted filesystem), then
# rotations of partitions and loss made with the kernel's packet filter (root and nft only).
#
#   scripts/chaos.sh                      # 10 minutes of chaos runs, 200 kill cycles, 20 power cuts
#   DURATION=3600 scripts/chaos.sh        # an hour of chaos runs
#   CHAOS_SEED=1234 CHAOS_NODES=5 CHAOS_SECONDS=120 DURATION=1 scripts/chaos.sh   # one seed
#
# Knobs (environment):
#   DURATION       total seconds of chaos runs (a run that has started finishes)   default 600
#   CHAOS_SECONDS  length of one run                                              default 60
#   CHAOS_SEED     first seed (then +1, +2, …)                                    default: the time
#   CHAOS_NODES    3 or 5 (default: both, alternating)
#   KILL_CYCLES    whole-cluster kill -9 cycles after the chaos runs (0: none)     default 200
#   POWER_CUTS     whole-cluster power cuts after the kill cycles (0: none)        default 20
#   PARTITION_ROUNDS rotations of the kernel-made partitions, 3 and 5 nodes (0: none) default 5
#   LOG_DIR        where every run's output goes                                  default target/chaos
#
# A failing run prints its seed, the nemesis log and the failing key's history, keeps its log in
# LOG_DIR, and the script exits 1. The seed fixes the nemesis schedule and the proxy's randomness;
# the processes' timing is the OS's, so a replay is likely but not certain to fail the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
CHAOS_SECONDS=${CHAOS_SECONDS:-60}
SEED=${CHAOS_SEED:-$(date +%s)}
KILL_CYCLES=${KILL_CYCLES:-200}
POWER_CUTS=${POWER_CUTS:-20}
PARTITION_ROUNDS=${PARTITION_ROUNDS:-5}
LOG_DIR=${LOG_DIR:-target/chaos}
if [[ -n "${CHAOS_NODES:-}" ]]; then SIZES=("$CHAOS_NODES"); else SIZES=(3 5); fi
mkdir -p "$LOG_DIR"

cargo test --no-run --test chaos --test durability --test power_cut --test partitions >/dev/null 2>&1 ||
    cargo test --no-run --test chaos --test durability --test power_cut --test partitions

end=$((SECONDS + DURATION))
runs=0
seed=$SEED
while ((SECONDS < end)); do
    for n in "${SIZES[@]}"; do
        log="$LOG_DIR/chaos-${n}nodes-seed${seed}.log"
        echo "== chaos run: $n nodes, seed $seed, ${CHAOS_SECONDS}s (log: $log)"
        if ! CHAOS_SEED=$seed CHAOS_SEEDS=1 CHAOS_NODES=$n CHAOS_SECONDS=$CHAOS_SECONDS \
            cargo test -q --test chaos -- --nocapture >"$log" 2>&1; then
            echo "FAILED: $n nodes, seed $seed"
            # The panic message: seed, replay command, nemesis log, the failing key's history.
            sed -n '/panicked at/,/^node logs:/p' "$log"
            exit 1
        fi
        grep -oE 'chaos: [0-9]+ nodes, seed.*' "$log" || true
        runs=$((runs + 1))
        seed=$((seed + 1))
        ((SECONDS < end)) || break
    done
done
echo "chaos runs: $runs, seeds $SEED..$((seed - 1)), 0 violations"

# run_phase NAME LOG FAILURE EXCERPT SUMMARY ENV=VALUE -- CARGO_TEST_ARGS...: runs one test binary
# with its knob set, and on failure prints what it was checking and the sed EXCERPT of its log.
run_phase() {
    local name=$1 log=$2 failure=$3 excerpt=$4 summary=$5 knob=$6
    shift 7
    echo "== $name (log: $log)"
    if ! env "$knob" cargo test -q "$@" -- --nocapture >"$log" 2>&1; then
        echo "FAILED: $failure"
        sed -n "$excerpt" "$log" | head -100
        exit 1
    fi
    grep -oE "$summary" "$log"
}

if ((KILL_CYCLES > 0)); then
    run_phase "durability: $KILL_CYCLES whole-cluster kill -9 cycles" \
        "$LOG_DIR/durability-${KILL_CYCLES}cycles.log" "acknowledged writes lost" \
        '/panicked at/,$p' 'durability: kill.*' \
        "KILL_CYCLES=$KILL_CYCLES" -- --test durability
fi

if ((POWER_CUTS > 0)); then
    run_phase "power cut: $POWER_CUTS whole-cluster power cuts" \
        "$LOG_DIR/power-cut-${POWER_CUTS}cuts.log" \
        "acknowledged writes lost or the cluster did not converge" \
        '/panicked at/,$p' 'SKIPPED: .*|power cut: cuts.*' \
        "POWER_CUTS=$POWER_CUTS" -- --test power_cut whole_cluster
fi

if ((PARTITION_ROUNDS > 0)); then
    run_phase "partitions: $PARTITION_ROUNDS rotations, 3 and 5 nodes" \
        "$LOG_DIR/partitions-${PARTITION_ROUNDS}rounds.log" "not linearizable or not converged" \
        '/panicked at/,/^node logs:/p' 'SKIPPED: .*|partitions: [0-9]+ nodes.*' \
        "PARTITION_ROUNDS=$PARTITION_ROUNDS" -- --test partitions
fi
