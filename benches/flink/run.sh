#!/usr/bin/env bash
# Apache Flink 2.3 against wafer on the same input, alternated in one run:
# Flink SQL's filter + 5-minute tumbling window (filter_window.py, p=2)
# and wafer's whole user-features job (release binary, p=2).
#
#   benches/flink/run.sh <events.jsonl> [runs]
#
# Installs PyFlink (which bundles Flink's jars; Java 17 runs them) into a
# venv under ${WAFER_CACHE_DIR:-~/.cache/wafer}/flink-venv once. WAFER_BIN
# picks the wafer binary (default: the release build), WAFER_COMPONENTS its
# components (default: target/components).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

input=$(realpath "${1:?usage: benches/flink/run.sh <events.jsonl> [runs]}")
runs=${2:-3}
venv="${WAFER_CACHE_DIR:-$HOME/.cache/wafer}/flink-venv"
bin=${WAFER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/wafer}
components=${WAFER_COMPONENTS:-$repo/target/components}

if ! "$venv/bin/python" -c 'import pyflink' 2>/dev/null; then
    echo "installing apache-flink 2.3.0 into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q apache-flink==2.3.0
fi
[ -x "$bin" ] || { echo "no wafer binary at $bin (cargo build --release)" >&2; exit 1; }
[ -f "$components/interaction-json.wasm" ] || { echo "no components in $components (cargo xtask guests)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
events=$(wc -l < "$input")
flink_rates=()
flink_net=()
wafer_rates=()
for i in $(seq 1 "$runs"); do
    rm -rf "$work/flink" "$work/wafer"
    line=$("$venv/bin/python" benches/flink/filter_window.py "$input" "$work/flink" 2 2>"$work/flink.log" | tail -1) \
        || { cat "$work/flink.log" >&2; exit 1; }
    flink_rates+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["events_per_s"])' "$line")")
    flink_net+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["net_events_per_s"] or 0)' "$line")")
    flink_rows=$(cat "$work"/flink/* 2>/dev/null | wc -l)

    started=$(date +%s.%N)
    INPUT=$input OUTPUT_DIR=$work/wafer PARALLELISM=2 WAFER_COMPONENTS=$components \
        "$bin" run examples/user-features/job.yaml 2>"$work/wafer.log" \
        || { cat "$work/wafer.log" >&2; exit 1; }
    ended=$(date +%s.%N)
    wafer_rates+=("$(python3 -c "print(round($events / ($ended - $started)))")")
    echo "run $i: Flink $line ($flink_rows window rows); wafer ${wafer_rates[-1]} events/s ($(wc -l < "$work/wafer/purchases_5m.jsonl") window rows)"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(median "${flink_rates[@]}")
n=$(median "${flink_net[@]}")
w=$(median "${wafer_rates[@]}")
echo
echo "$events events, parallelism 2, $runs runs, medians:"
echo "  Flink 2.3 SQL filter + 5-minute window: $f events/s from submission to end, $n by its net runtime"
echo "  wafer user-features job (whole process): $w events/s"
python3 -c "print(f'  wafer / Flink: {$w / $f:.1f}x (submission to end), {$w / max($n, 1):.1f}x (net runtime)')"
