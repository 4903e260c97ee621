"""Apache Flink's figure for issue 3's comparison: Flink SQL (in the JVM,
through PyFlink) runs a filter plus a 5-minute tumbling window over a
JSON-lines file of interaction events, streaming mode, parallelism 2.

    filter_window.py <events.jsonl> <output dir> [parallelism]

Prints one JSON line with the input's lines (counted before Flink starts,
not timed) and three times, each with its events/s:

- script_wall_s: from the top of this script (before PyFlink is imported,
  so the JVM's start-up is included) to the report, less the line count;
  the Python interpreter's own start and the JVM's shutdown after the
  report (~0.8 s together) are not in it (run.sh also times the process);
- submit_to_end_s: from just before the INSERT's `execute_sql` to the end
  of the job (JVM and Python start-up excluded, planning and job
  submission included);
- net_runtime_s: Flink's own net runtime of the job, from the
  JobExecutionResult (`get_net_runtime()`), null if the client gives none.

Columns the job does not use (event_id, item_id) are ignored by the JSON
format; corrupt lines are skipped (`json.ignore-parse-errors`), missing
fields are null (`json.fail-on-missing-field` false). Results go to the
filesystem sink as JSON (not blackhole), so Flink writes what wafer writes;
the streaming file writer commits its part files at the end of the
bounded input, without checkpoints.

The filesystem source does not split a JSON file: one source subtask reads
the whole file and the other stays idle; the window aggregation (local and
global) runs at the given parallelism.
"""

import time

_script_started = time.monotonic()

import json  # noqa: E402
import sys  # noqa: E402

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402
from pyflink.version import __version__ as pyflink_version  # noqa: E402


def main() -> None:
    path, out = sys.argv[1], sys.argv[2]
    parallelism = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    counting = time.monotonic()
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)
    counted = time.monotonic()

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
    ended = time.monotonic()
    secs = ended - started

    try:
        from pyflink.java_gateway import get_gateway

        jvm = get_gateway().jvm
        flink_version = jvm.org.apache.flink.runtime.util.EnvironmentInformation.getVersion()
        java_version = jvm.java.lang.System.getProperty("java.version")
    except Exception:
        flink_version = java_version = None

    # The line count (between the imports and the JVM's start) is not part
    # of the script's wall time.
    wall = (time.monotonic() - _script_started) - (counted - counting)
    report = {
        "events": lines,
        "parallelism": parallelism,
        "script_wall_s": round(wall, 3),
        "script_events_per_s": round(lines / wall),
        "submit_to_end_s": round(secs, 3),
        "events_per_s": round(lines / secs),
        "net_runtime_s": None if net_ms is None else net_ms / 1000,
        "net_events_per_s": None if not net_ms else round(lines / (net_ms / 1000)),
        "pyflink": pyflink_version,
        "flink": flink_version,
        "java": java_version,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
