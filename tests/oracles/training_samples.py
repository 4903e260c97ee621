#!/usr/bin/env python3
"""Independent oracle of the training-samples reference job (REFERENCE_JOBS.md).

Plain sequential code sharing nothing with the host or the generator: it
reads each file in order, keeps that file's watermark (largest event time so
far minus 5 s) to decide lateness (older than watermark - 60 s), then joins:
every view that is not late gets one sample whose label for each kind is 1
when an engagement of that kind, same user and item, not late, has an event
time in [view_time, view_time + 600000]. It prints the expected results:

    {"samples": [...], "late": [...], "dlq": N}

usage: training_samples.py VIEWS ENGAGEMENTS
"""

import bisect
import json
import sys
from collections import defaultdict

OUT_OF_ORDERNESS = 5_000
LATENESS = 60_000
INTERVAL = 600_000
I64 = (-(2**63), 2**63)


def is_int(x):
    return type(x) is int and I64[0] <= x < I64[1]


def is_id(x):
    return isinstance(x, str) and x != ""


def parse(line, fields):
    """The record a line holds, or None if it must be dead-lettered."""
    try:
        v = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(v, dict):
        return None
    rec = {}
    for f in fields:
        x = v.get(f)
        if f == "event_time_ms":
            if not is_int(x):
                return None
        elif f == "kind":
            if not isinstance(x, str):
                return None
        elif not is_id(x):
            return None
        rec[f] = x
    return rec


def read(path, fields):
    """(on-time records, late records, dead-letter count) of one file."""
    on_time, late, dead = [], [], 0
    top = None
    with open(path, "rb") as f:
        for raw in f:  # lines split on b"\n" only
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if raw == b"":
                continue
            rec = parse(raw, fields)
            if rec is None:
                dead += 1
                continue
            t = rec["event_time_ms"]
            if top is not None and t < top - OUT_OF_ORDERNESS - LATENESS:
                late.append(rec)
            else:
                on_time.append(rec)
            top = t if top is None else max(top, t)
    return on_time, late, dead


def main():
    views, late_v, dead_v = read(sys.argv[1], ("view_id", "user_id", "item_id", "event_time_ms"))
    engs, late_e, dead_e = read(sys.argv[2], ("user_id", "item_id", "kind", "event_time_ms"))
    times = defaultdict(list)  # (user, item, kind) -> sorted times
    for e in engs:
        times[(e["user_id"], e["item_id"], e["kind"])].append(e["event_time_ms"])
    for ts in times.values():
        ts.sort()
    samples = {}
    for v in views:
        t = v["event_time_ms"]
        row = {"view_id": v["view_id"], "user_id": v["user_id"], "item_id": v["item_id"], "view_time_ms": t}
        for kind in ("like", "share", "comment"):
            ts = times.get((v["user_id"], v["item_id"], kind), [])
            i = bisect.bisect_left(ts, t)
            row[kind] = 1 if i < len(ts) and ts[i] <= t + INTERVAL else 0
        samples[v["view_id"]] = row
    out = {"samples": list(samples.values()), "late": late_v + late_e, "dlq": dead_v + dead_e}
    sys.stdout.write(json.dumps(out, ensure_ascii=False))  # one write: json.dump writes per token


if __name__ == "__main__":
    main()
