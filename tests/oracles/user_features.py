#!/usr/bin/env python3
"""Independent oracle of the user-features reference job (REFERENCE_JOBS.md).

Plain sequential code sharing nothing with the host: it reads the input
(JSON lines or length-delimited protobuf) in file order, keeps the watermark
as the largest event time seen so far minus 5 s, decides lateness, and
computes the 5-minute purchase windows and the 15-minute-gap sessions. It
prints the expected final results as JSON:

    {"purchases_5m": [...], "sessions": [...], "late": [...], "dlq": N}

usage: user_features.py FILE json|protobuf
"""

import heapq
import json
import struct
import sys

OUT_OF_ORDERNESS = 5_000
LATENESS = 60_000
WINDOW = 300_000
GAP = 900_000
FIELDS = ("event_id", "user_id", "event_type", "item_id", "amount", "event_time_ms")


def valid_json(line):
    """The record a JSON line holds, or None if it must be dead-lettered."""
    try:
        v = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(v, dict):
        return None
    user, kind, t = v.get("user_id"), v.get("event_type"), v.get("event_time_ms")
    if not isinstance(user, str) or user == "" or not isinstance(kind, str):
        return None
    if type(t) is not int or not (-(2**63) <= t < 2**63):
        return None
    rec = {"user_id": user, "event_type": kind, "event_time_ms": t}
    for key in ("event_id", "item_id"):
        x = v.get(key)
        if x is None:
            continue
        if not isinstance(x, str):
            return None
        rec[key] = x
    amount = v.get("amount")
    if amount is not None:
        if type(amount) not in (int, float):
            return None
        rec["amount"] = float(amount)
    return rec


def json_records(path):
    with open(path, "rb") as f:
        for raw in f.read().split(b"\n"):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if raw.strip() == b"":
                continue
            yield valid_json(raw)


def read_varint(buf, i):
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def decode_interaction(msg):
    """reference.v1.Interaction with proto3 rules; None if undecodable or
    missing a required field."""
    fields = {}
    i = 0
    try:
        while i < len(msg):
            tag, i = read_varint(msg, i)
            num, wire = tag >> 3, tag & 7
            if num == 0:
                return None
            if wire == 0:
                v, i = read_varint(msg, i)
            elif wire == 1:
                if i + 8 > len(msg):
                    return None
                v = msg[i : i + 8]
                i += 8
            elif wire == 2:
                n, i = read_varint(msg, i)
                if i + n > len(msg):
                    return None
                v = msg[i : i + n]
                i += n
            elif wire == 5:
                if i + 4 > len(msg):
                    return None
                v = msg[i : i + 4]
                i += 4
            else:
                return None
            fields[num] = (wire, v)
    except ValueError:
        return None
    rec = {}
    for num, key in ((1, "event_id"), (2, "user_id"), (3, "event_type"), (4, "item_id")):
        if num in fields:
            wire, v = fields[num]
            if wire != 2:
                return None
            try:
                s = v.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if s:
                rec[key] = s
    if 5 in fields:
        wire, v = fields[5]
        if wire != 1:
            return None
        amount = struct.unpack("<d", v)[0]
        if amount != 0.0:
            rec["amount"] = amount
    if 6 in fields:
        wire, v = fields[6]
        if wire != 0:
            return None
        rec["event_time_ms"] = v - (1 << 64) if v >= 1 << 63 else v
    if not rec.get("user_id") or not rec.get("event_type") or not rec.get("event_time_ms"):
        return None
    return rec


def protobuf_records(path):
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        try:
            n, j = read_varint(data, i)
        except ValueError:
            yield None  # the rest cannot be framed
            return
        if j + n > len(data):
            yield None
            return
        yield decode_interaction(data[j : j + n])
        i = j + n


def main():
    path, fmt = sys.argv[1], sys.argv[2]
    records = json_records(path) if fmt == "json" else protobuf_records(path)
    max_t = None
    windows = {}  # (user, start) -> [total, count]
    open_sessions = {}  # user -> [start, last, events, clicks]
    sessions = []
    late = []
    dlq = 0

    due = []  # heap of (last + GAP, user); stale entries are skipped

    def close_due(wm):
        while due and due[0][0] <= wm:
            end, user = heapq.heappop(due)
            s = open_sessions.get(user)
            if s is not None and s[1] + GAP == end:
                del open_sessions[user]
                sessions.append((user, s))

    for rec in records:
        if rec is None:
            dlq += 1
            continue
        t = rec["event_time_ms"]
        wm = None if max_t is None else max_t - OUT_OF_ORDERNESS
        if wm is not None:
            close_due(wm)
        purchase = rec["event_type"] == "purchase"
        if wm is None:
            is_late = False
        elif purchase:
            window_end = t - t % WINDOW + WINDOW
            is_late = window_end - 1 + LATENESS <= wm
        else:
            is_late = t < wm - LATENESS
        max_t = t if max_t is None else max(max_t, t)
        if is_late:
            late.append({k: rec[k] for k in FIELDS if k in rec})
            continue
        user = rec["user_id"]
        if purchase:
            w = windows.setdefault((user, t - t % WINDOW), [0.0, 0])
            w[0] += rec.get("amount", 0.0)
            w[1] += 1
        click = 1 if rec["event_type"] == "click" else 0
        s = open_sessions.get(user)
        if s is not None and t - s[1] < GAP:
            s[0] = min(s[0], t)
            s[1] = max(s[1], t)
            s[2] += 1
            s[3] += click
            heapq.heappush(due, (s[1] + GAP, user))
        else:
            if s is not None:
                sessions.append((user, s))
            open_sessions[user] = [t, t, 1, click]
            heapq.heappush(due, (t + GAP, user))
    for user, s in open_sessions.items():
        sessions.append((user, s))

    out = {
        "purchases_5m": [
            {
                "user_id": u,
                "window_start_ms": start,
                "window_end_ms": start + WINDOW,
                "purchase_total": total,
                "purchase_count": count,
            }
            for (u, start), (total, count) in windows.items()
        ],
        "sessions": [
            {
                "user_id": u,
                "session_start_ms": s[0],
                "session_end_ms": s[1],
                "event_count": s[2],
                "click_count": s[3],
            }
            for u, s in sessions
        ],
        "late": late,
        "dlq": dlq,
    }
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
