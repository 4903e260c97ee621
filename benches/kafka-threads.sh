#!/usr/bin/env bash
# CPU per thread (by name) per run of the Kafka bench's job runs, file and
# Kafka source apart: where the Kafka run's extra CPU goes.
#
#   benches/kafka-threads.sh [RUNS]      (default 5; needs perf)
#
# Each mode runs `cargo bench --bench kafka` under `perf record -a` (all
# processes: the broker too) and counts only the samples inside the runs,
# whose start and end the bench prints (WAFER_BENCH_PERF_TIMES=1).
set -euo pipefail
runs=${1:-5}
hz=2000
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bin=$(cargo bench -p wafer-benches --bench kafka --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kafka" and m.get("executable"):
        print(m["executable"])')
for mode in FILE KAFKA; do
    env "WAFER_BENCH_${mode}_ONLY=1" WAFER_BENCH_RUNS="$runs" WAFER_BENCH_PERF_TIMES=1 \
        perf record -q -k CLOCK_MONOTONIC -a -F "$hz" -o "$out/$mode.data" -- "$bin" --bench \
        2>"$out/$mode.log" | grep only
    # Sample counts per thread name inside each run's window.
    sed -nE 's/^perf-time (start|end) Instant \{ tv_sec: ([0-9]+), tv_nsec: ([0-9]+) \}/\2 \3/p' "$out/$mode.log" |
        awk '{printf "%d.%09d\n", $1, $2}' | paste - - | while read -r a b; do
        perf report -i "$out/$mode.data" --time "$a,$b" --sort comm -F sample,comm --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$'
    done >"$out/$mode.samples"
done
# ms of CPU per run: samples / hz / runs.
awk -v hz="$hz" -v runs="$runs" '
    FNR == 1 { mode = (FILENAME ~ /FILE/) ? "file" : "kafka" }
    { n = $1; $1 = ""; name = substr($0, 2); cpu[name, mode] += n; names[name] = 1; total[mode] += n }
    END {
        for (t in names) {
            f = 1000 * cpu[t, "file"] / hz / runs; k = 1000 * cpu[t, "kafka"] / hz / runs
            if (f >= 5 || k >= 5) printf "%-18s %9.0f %9.0f %+9.0f\n", t, f, k, k - f
        }
        f = 1000 * total["file"] / hz / runs; k = 1000 * total["kafka"] / hz / runs
        printf "%-18s %9.0f %9.0f %+9.0f\n", "all (idle too)", f, k, k - f
    }' "$out/FILE.samples" "$out/KAFKA.samples" | sort -k1,1 -s >"$out/table"
printf "%-18s %9s %9s %9s\n" "thread (ms/run)" "file" "kafka" "extra"
cat "$out/table"
