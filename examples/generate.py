#!/usr/bin/env python3
"""Generates inputs for the example jobs: interaction events (JSON lines and/or
length-delimited protobuf, `interaction.proto`), and view/engagement streams.

Events are realistic enough to exercise the host: a skewed (Zipf-like) user
distribution, unicode user ids, unknown extra fields, a few seconds of
out-of-order arrival, late and very late events, and corrupt records of every
kind. The same seed always gives the same files.

    python3 examples/generate.py interactions --events 100000 --out data/events
      -> data/events.jsonl and data/events.pb (same events in both formats)
"""

import argparse
import json
import random
import struct
import sys

EVENT_TYPES = ["view", "view", "view", "click", "click", "like", "share", "purchase"]
BASE_MS = 1_700_000_000_000


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_string(field, s):
    b = s.encode("utf-8")
    return varint(field << 3 | 2) + varint(len(b)) + b


def encode_interaction(ev):
    """Encodes a dict as reference.v1.Interaction (proto3: defaults omitted)."""
    out = bytearray()
    for field, key in ((1, "event_id"), (2, "user_id"), (3, "event_type"), (4, "item_id")):
        v = ev.get(key)
        if isinstance(v, str) and v:
            out += pb_string(field, v)
    amount = ev.get("amount")
    if isinstance(amount, float) and amount != 0.0:
        out += varint(5 << 3 | 1) + struct.pack("<d", amount)
    t = ev.get("event_time_ms")
    if isinstance(t, int) and t != 0:
        out += varint(6 << 3 | 0) + varint(t)
    return bytes(out)


def user_ids(rng, n):
    ids = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            ids.append(f"ユーザー-{i}")
        elif r < 0.08:
            ids.append(f"usér-{i}-ß")
        elif r < 0.10:
            ids.append(f"bot-{i}")
        else:
            ids.append(f"user-{i}")
    return ids


def corrupt_json(rng, ev):
    kind = rng.randrange(7)
    line = json.dumps(ev, ensure_ascii=False)
    if kind == 0:
        return line[: rng.randrange(1, len(line) - 1)].encode()  # truncated
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(5, 60))).replace(b"\n", b"?")
    if kind == 2:
        bad = dict(ev, event_time_ms=str(ev["event_time_ms"]))  # wrong type
        return json.dumps(bad).encode()
    if kind == 3:
        bad = dict(ev)
        del bad["user_id"]  # missing required field
        return json.dumps(bad).encode()
    if kind == 4:
        return json.dumps(dict(ev, user_id="")).encode()  # empty user id
    if kind == 5:
        return b"[1, 2, 3]"  # valid JSON, not an object
    return json.dumps(dict(ev, event_time_ms=ev["event_time_ms"] + 0.5)).encode()  # float time


def corrupt_pb(rng, ev):
    kind = rng.randrange(4)
    good = encode_interaction(ev)
    if kind == 0:
        return good[: max(1, len(good) // 2)]  # truncated inside a field
    if kind == 1:
        return bytes([0x0F]) + good  # invalid wire type 7
    if kind == 2:
        return encode_interaction(dict(ev, user_id=""))  # missing user id
    return encode_interaction(dict(ev, event_type=""))  # missing event type


WINDOW_MS = 300_000
LATENESS_MS = 60_000
MARGIN_MS = 15_000


def late_time(rng, clock, kind):
    """An event time clearly late for user-features: the watermark is about
    clock - 5 s (minus a few seconds of disorder), a record is late when
    older than watermark - 60 s, and a purchase when its 5-minute window
    closed (window_end - 1 + 60 s <= watermark). Late times keep a 15 s
    margin from those limits, so that whether a record is late does not
    depend on how the stream is split into batches or workers."""
    while True:
        t = clock - rng.randrange(80_000, 600_000)
        if kind != "purchase":
            return t
        window_end = t - t % WINDOW_MS + WINDOW_MS
        if window_end - 1 + LATENESS_MS <= clock - 5_000 - 3_000 - MARGIN_MS:
            return t


def interactions(args):
    rng = random.Random(args.seed)
    users = user_ids(rng, args.users)
    weights = [1.0 / (i + 1) ** args.skew for i in range(len(users))]
    clock = BASE_MS
    events = []  # (json bytes or None, pb bytes or None)
    for i in range(args.events):
        clock += rng.randrange(0, 2 * args.gap_ms + 1)
        kind = rng.choice(EVENT_TYPES)
        r = rng.random()
        if r < args.very_late:
            t = clock - rng.randrange(3_600_000, 3 * 3_600_000)
        elif r < args.very_late + args.late:
            t = late_time(rng, clock, kind)
        else:
            t = clock - rng.randrange(0, 3_000)  # within the 5 s bound
        ev = {
            "event_id": f"ev-{args.seed}-{i}",
            "user_id": rng.choices(users, weights)[0],
            "event_type": kind,
            "item_id": f"item-{rng.randrange(args.items)}",
            "event_time_ms": t,
        }
        if kind == "purchase":
            ev["amount"] = round(rng.uniform(1, 500), 2)
        if rng.random() < 0.1:
            ev["client"] = {"os": rng.choice(["ios", "android"]), "v": rng.randrange(100)}
        if rng.random() < args.corrupt:
            events.append((corrupt_json(rng, ev), corrupt_pb(rng, ev)))
        else:
            events.append((json.dumps(ev, ensure_ascii=False).encode("utf-8"), encode_interaction(ev)))
    if args.format in ("json", "both"):
        with open(args.out + ".jsonl", "wb") as f:
            for j, _ in events:
                f.write(j + b"\n")
    if args.format in ("protobuf", "both"):
        with open(args.out + ".pb", "wb") as f:
            for _, p in events:
                f.write(varint(len(p)) + p)
    print(f"wrote {len(events)} events to {args.out}.*", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("interactions", help="interaction events for user-features")
    i.add_argument("--events", type=int, default=10_000)
    i.add_argument("--users", type=int, default=500)
    i.add_argument("--items", type=int, default=1000)
    i.add_argument("--skew", type=float, default=1.0, help="Zipf exponent of user activity")
    i.add_argument("--gap-ms", type=int, default=250, help="mean event-time step between events")
    i.add_argument("--late", type=float, default=0.01, help="fraction of events 80 s to 10 min late")
    i.add_argument("--very-late", type=float, default=0.002, help="fraction of events hours late")
    i.add_argument("--corrupt", type=float, default=0.01, help="fraction of corrupt records")
    i.add_argument("--seed", type=int, default=7)
    i.add_argument("--format", choices=["json", "protobuf", "both"], default="both")
    i.add_argument("--out", required=True, help="output path without extension")
    args = p.parse_args()
    if args.what == "interactions":
        interactions(args)


if __name__ == "__main__":
    main()
