"""Apache Flink's figure for issue 3's comparison: Flink SQL (in the JVM,
through PyFlink) runs a filter plus a 5-minute tumbling window over a
JSON-lines file of interaction events, streaming mode, parallelism 2.

    filter_window.py <events.jsonl> <output dir> [parallelism]

Prints one JSON line: the input's lines, the seconds from submitting the
job to its end (JVM and Python start-up excluded), Flink's own net runtime
of the job when the client reports it, and events/s for each.

Columns the job does not use (event_id, item_id) are ignored by the JSON
format; corrupt lines are skipped (`json.ignore-parse-errors`). Results go
to a filesystem sink as JSON, so Flink writes what wafer writes.
"""

import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment


def main() -> None:
    path, out = sys.argv[1], sys.argv[2]
    parallelism = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(parallelism))
    conf.set("pipeline.name", "wafer-bench-filter-window")

    env.execute_sql(
        f"""
        CREATE TABLE events (
            user_id STRING,
            event_type STRING,
            event_time_ms BIGINT,
            amount DOUBLE,
            ts AS TO_TIMESTAMP_LTZ(event_time_ms, 3),
            WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{path}',
            'format' = 'json',
            'json.ignore-parse-errors' = 'true',
            'json.fail-on-missing-field' = 'false'
        )
        """
    )
    env.execute_sql(
        f"""
        CREATE TABLE purchases_5m (
            user_id STRING,
            window_start TIMESTAMP(3),
            window_end TIMESTAMP(3),
            purchase_total DOUBLE,
            purchase_count BIGINT
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{out}',
            'format' = 'json'
        )
        """
    )
    started = time.monotonic()
    result = env.execute_sql(
        """
        INSERT INTO purchases_5m
        SELECT user_id, window_start, window_end, SUM(amount), COUNT(*)
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' MINUTES))
        WHERE event_type = 'purchase'
        GROUP BY user_id, window_start, window_end
        """
    )
    client = result.get_job_client()
    net_ms = None
    if client is not None:
        done = client.get_job_execution_result().result()
        try:
            net_ms = done.get_net_runtime()
        except Exception:  # the client of some versions has no net runtime
            net_ms = None
    else:
        result.wait()
    secs = time.monotonic() - started
    report = {
        "events": lines,
        "submit_to_end_s": round(secs, 3),
        "events_per_s": round(lines / secs),
        "net_runtime_s": None if net_ms is None else net_ms / 1000,
        "net_events_per_s": None if not net_ms else round(lines / (net_ms / 1000)),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
