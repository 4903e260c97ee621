#!/usr/bin/env bash
# Apache Flink 2.3 against wafer on the same input, alternated in one run:
# Flink SQL's filter + 5-minute tumbling window (filter_window.py, p=2)
# and wafer's whole user-features job (release binary, p=2).
#
#   benches/flink/run.sh <events.jsonl> [runs]
#
# Installs PyFlink (which bundles Flink's jars; Java 17 runs them) into a
# venv under ${WAFER_CACHE_DIR:-~/.cache/wafer}/flink-venv once and reuses
# it. WAFER_BIN picks the wafer binary (default: the release build under
# ${CARGO_TARGET_DIR:-target}), WAFER_COMPONENTS its components (default:
# target/components). See benches/flink/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

input=$(realpath "${1:?usage: benches/flink/run.sh <events.jsonl> [runs]}")
runs=${2:-3}
venv="${WAFER_CACHE_DIR:-$HOME/.cache/wafer}/flink-venv"
target=${CARGO_TARGET_DIR:-$repo/target}
bin=${WAFER_BIN:-$target/release/wafer}
components=${WAFER_COMPONENTS:-$repo/target/components}

if ! "$venv/bin/python" -c 'import pyflink' 2>/dev/null; then
    echo "installing apache-flink 2.3.0 into $venv" >&2
    started=$(date +%s.%N)
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q apache-flink==2.3.0
    echo "installed in $(python3 -c "print(f'{$(date +%s.%N) - $started:.0f}')") s" >&2
fi
[ -x "$bin" ] || { echo "no wafer binary at $bin (cargo build --release)" >&2; exit 1; }
for c in interaction-json sessions; do
    [ -f "$components/$c.wasm" ] || { echo "no $c.wasm in $components (cargo xtask guests)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
events=$(wc -l < "$input")
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(0 if v is None else v)' "$1" "$2"; }
rate() { python3 -c "print(round($events / ($2 - $1)))"; }
flink_rates=()
flink_net=()
flink_proc=()
wafer_rates=()
echo "$events events in $input, parallelism 2, $runs runs"
echo "wafer: $bin, components $components"
for i in $(seq 1 "$runs"); do
    rm -rf "$work/flink" "$work/wafer"

    started=$(date +%s.%N)
    line=$("$venv/bin/python" benches/flink/filter_window.py "$input" "$work/flink" 2 2>"$work/flink.log" | tail -1) \
        || { cat "$work/flink.log" >&2; exit 1; }
    ended=$(date +%s.%N)
    [ "$i" = 1 ] && echo "Flink $(field "$line" flink) (PyFlink $(field "$line" pyflink), Java $(field "$line" java))"
    flink_rates+=("$(field "$line" events_per_s)")
    flink_net+=("$(field "$line" net_events_per_s)")
    flink_proc+=("$(rate "$started" "$ended")")
    flink_rows=$(cat "$work"/flink/part-* 2>/dev/null | wc -l)

    started=$(date +%s.%N)
    INPUT=$input OUTPUT_DIR=$work/wafer PARALLELISM=2 WAFER_COMPONENTS=$components \
        "$bin" run examples/user-features/job.yaml >"$work/wafer.log" 2>&1 \
        || { cat "$work/wafer.log" >&2; exit 1; }
    ended=$(date +%s.%N)
    wafer_rates+=("$(rate "$started" "$ended")")
    wafer_rows=$(wc -l < "$work/wafer/purchases_5m.jsonl")

    echo "run $i:"
    echo "  Flink: ${flink_rates[-1]} events/s submission to end ($(field "$line" submit_to_end_s) s)," \
        "${flink_net[-1]} by net runtime ($(field "$line" net_runtime_s) s)," \
        "$(field "$line" script_events_per_s) script wall ($(field "$line" script_wall_s) s)," \
        "${flink_proc[-1]} whole process; $flink_rows window rows"
    echo "  wafer: ${wafer_rates[-1]} events/s whole process" \
        "($(python3 -c "print(f'{$ended - $started:.3f}')") s); $wafer_rows window rows"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(median "${flink_rates[@]}")
n=$(median "${flink_net[@]}")
p=$(median "${flink_proc[@]}")
w=$(median "${wafer_rates[@]}")
echo
echo "medians of $runs runs ($events events, parallelism 2):"
echo "  Flink SQL filter + 5-minute window: $f events/s submission to end (JVM start excluded)," \
    "$n by its net runtime, $p whole process"
echo "  wafer user-features job, whole process (start-up included): $w events/s"
python3 -c "print(f'  wafer / Flink: {$w / $f:.2f}x (submission to end), {$w / max($n, 1):.2f}x (net runtime), {$w / $p:.2f}x (whole process)')"
