#!/usr/bin/env python3
"""Generates inputs for the example jobs: interaction events (JSON lines and/or
length-delimited protobuf, `interaction.proto`), and view/engagement streams.

Events are realistic enough to exercise the host: a skewed (Zipf-like) user
distribution, unicode user ids, unknown extra fields, a few seconds of
out-of-order arrival, late and very late events, and corrupt records of every
kind. The same seed always gives the same files.

    python3 examples/generate.py interactions --events 100000 --out data/events
      -> data/events.jsonl and data/events.pb (same events in both formats)
    python3 examples/generate.py training --views 100000 --out data/t
      -> data/t-views.jsonl and data/t-engagements.jsonl
"""

import argparse
import itertools
import bisect
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
    cum = list(itertools.accumulate(weights))  # choices() would re-sum per call
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
            "user_id": rng.choices(users, cum_weights=cum)[0],
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


KINDS = ["like", "share", "comment"]
INTERVAL_MS = 600_000


def corrupt_line(rng, rec):
    """One corrupt JSON line derived from a valid record."""
    j = json.dumps(rec, ensure_ascii=False)
    k = rng.randrange(8)
    if k == 0:
        return j[: rng.randrange(1, len(j))].encode("utf-8")  # truncated
    if k == 1:
        return json.dumps([rec]).encode("utf-8")  # not an object
    if k == 2:
        return json.dumps({f: v for f, v in rec.items() if f != "user_id"}).encode("utf-8")  # missing field
    if k == 3:
        return json.dumps(dict(rec, event_time_ms=str(rec["event_time_ms"]))).encode("utf-8")
    if k == 4:
        return json.dumps(dict(rec, event_time_ms=rec["event_time_ms"] + 0.5)).encode("utf-8")
    if k == 5:
        return json.dumps(dict(rec, user_id="")).encode("utf-8")
    if k == 6:
        return json.dumps(dict(rec, item_id=None)).encode("utf-8")
    return b'{"view_id": "v", "user_id": "\xff\xfe", "item_id": "x", "kind": "like", "event_time_ms": 1}'  # bad utf-8


def order(rng, records, late_fraction):
    """File order with bounded disorder, and the number of late records.

    On-time records are sorted by event time plus up to 3 s of jitter, so
    each is at most 3 s behind the largest event time before it and never
    late. A late record is sorted by its event time plus 80 s to 9 min, and
    moved further down if the file is sparse there, until the largest event
    time before it is at least 80 s ahead (15 s more than the 5 s bound plus
    60 s of allowed lateness). Whether a record is late therefore does not
    depend on how the file is split into batches or workers. A record chosen
    to be late whose event time is within 80 s of the file's largest stays
    on time."""
    on_time, late = [], []
    for rec in records:
        (late if rng.random() < late_fraction else on_time).append(rec)
    top = max((r["event_time_ms"] for r in on_time), default=None)
    for rec in [r for r in late if top is None or r["event_time_ms"] + 80_000 > top]:
        late.remove(rec)
        on_time.append(rec)
    keyed = sorted(((r["event_time_ms"] + rng.randrange(0, 3_001), rng.random(), r) for r in on_time),
                   key=lambda x: (x[0], x[1]))
    keys = [k for k, _, _ in keyed]
    prefix_max, m = [], None  # prefix_max[i]: largest event time among the first i + 1
    for _, _, r in keyed:
        m = r["event_time_ms"] if m is None else max(m, r["event_time_ms"])
        prefix_max.append(m)
    before = [[] for _ in range(len(keyed) + 1)]  # before[i]: late records placed before keyed[i]
    for rec in late:
        t = rec["event_time_ms"]
        pos = bisect.bisect_right(keys, t + rng.randrange(80_000, 540_001))
        pos = max(pos, bisect.bisect_left(prefix_max, t + 80_000) + 1)
        before[pos].append(rec)
    out = []
    for i in range(len(keyed) + 1):
        rng.shuffle(before[i])
        out.extend(before[i])
        if i < len(keyed):
            out.append(keyed[i][2])
    return out, len(late)


def write_lines(rng, path, records, corrupt):
    n_corrupt = 0
    with open(path, "wb") as f:
        for rec in records:
            if rng.random() < corrupt:
                f.write(corrupt_line(rng, rec) + b"\n")
                n_corrupt += 1
            if rng.random() < 0.1:
                rec = dict(rec, client={"os": rng.choice(["ios", "android"]), "v": rng.randrange(100)})
            f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
    return n_corrupt


def training_users(rng, n):
    """`u123`-style user ids, about 5% of them unicode (CJK, accents, emoji)."""
    ids = []
    for i in range(n):
        r = rng.random()
        if r < 0.02:
            ids.append(f"ユーザー{i}")
        elif r < 0.04:
            ids.append(f"usér-é-{i}")
        elif r < 0.05:
            ids.append(f"🦀-{i}")
        else:
            ids.append(f"u{i}")
    return ids


def training(args):
    """Views and engagements for training-samples: engagements inside and
    just outside their view's 10-minute interval (edges included), repeat
    views of one (user, item), unknown kinds, late and corrupt records, and
    padding on keys that never match to make one file much larger."""
    rng = random.Random(args.seed)
    users = training_users(rng, args.users)
    clock = BASE_MS
    views, engagements = [], []
    recent = []  # (time, user, item) of recent views, for repeat views
    for i in range(args.views):
        clock += rng.randrange(0, 2 * args.gap_ms + 1)
        while recent and recent[0][0] < clock - INTERVAL_MS:
            recent.pop(0)
        if recent and rng.random() < 0.05:
            _, user, item = rng.choice(recent)  # a repeat view within 10 minutes
        else:
            user = rng.choice(users)
            item = f"item-{rng.randrange(args.items)}"
        recent.append((clock, user, item))
        if len(recent) > 1000:
            recent.pop(0)
        v = {"view_id": f"v-{args.seed}-{i}", "user_id": user, "item_id": item, "event_time_ms": clock}
        views.append(v)

        def eng(t, kind=None):
            kind = kind or rng.choice(KINDS)
            if rng.random() < 0.005:
                kind = "dislike"
            engagements.append({"user_id": user, "item_id": item, "kind": kind, "event_time_ms": t})

        if rng.random() < args.engaged:
            for _ in range(rng.randint(1, 3)):
                r = rng.random()
                if r < 0.1:
                    eng(clock)
                elif r < 0.2:
                    eng(clock + INTERVAL_MS)
                else:
                    eng(clock + rng.randrange(0, INTERVAL_MS + 1))
        if rng.random() < args.decoys:
            if rng.random() < 0.5:
                eng(clock - rng.randrange(1, 300_001))
            else:
                eng(clock + INTERVAL_MS + rng.randrange(1, 300_001))
    end = clock
    for i in range(args.pad_views):
        t = BASE_MS + rng.randrange(0, max(1, end - BASE_MS))
        views.append({"view_id": f"pv-{args.seed}-{i}", "user_id": f"pad-{i}", "item_id": "pad",
                      "event_time_ms": t})
    for i in range(args.pad_engagements):
        t = BASE_MS + rng.randrange(0, max(1, end - BASE_MS))
        engagements.append({"user_id": f"pad-e-{i % 50_000}", "item_id": "pad", "kind": rng.choice(KINDS),
                            "event_time_ms": t})
    views, lv = order(rng, views, args.late)
    engagements, le = order(rng, engagements, args.late)
    cv = write_lines(rng, args.out + "-views.jsonl", views, args.corrupt)
    ce = write_lines(rng, args.out + "-engagements.jsonl", engagements, args.corrupt)
    print(f"wrote {len(views)} views ({lv} late, {cv} corrupt lines) and {len(engagements)} engagements "
          f"({le} late, {ce} corrupt lines) to {args.out}-*.jsonl", file=sys.stderr)


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
    t = sub.add_parser("training", help="views and engagements for training-samples")
    t.add_argument("--views", type=int, default=10_000)
    t.add_argument("--users", type=int, default=500)
    t.add_argument("--items", type=int, default=200)
    t.add_argument("--engaged", type=float, default=0.5, help="fraction of views with 1-3 engagements inside")
    t.add_argument("--decoys", type=float, default=0.3, help="fraction of views with an engagement just outside")
    t.add_argument("--late", type=float, default=0.01, help="fraction of clearly late records per file")
    t.add_argument("--corrupt", type=float, default=0.01, help="fraction of corrupt lines per file")
    t.add_argument("--pad-views", type=int, default=0, help="extra views on keys that never match")
    t.add_argument("--pad-engagements", type=int, default=0, help="extra engagements on keys that never match")
    t.add_argument("--gap-ms", type=int, default=50, help="mean event-time step between views")
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--out", required=True, help="output path prefix")
    args = p.parse_args()
    if args.what == "interactions":
        interactions(args)
    elif args.what == "training":
        training(args)


if __name__ == "__main__":
    main()
