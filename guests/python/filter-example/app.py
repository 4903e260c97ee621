"""Filter component in Python: drops records whose user_id starts with one of
the configured prefixes (bot and test traffic), like guests/filter-example.

Config: {"prefixes": ["bot-", "test-"]} (the default).
Build: componentize-py -d ../../../wit -w filter componentize app -o filter-example-py.wasm
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.filter_rows import Verdicts
from wit_world.imports import types

from wafer_rows import RowReader, rows

# componentize-py may create a new FilterRows object per call: keep the
# instance's state at module level.
STATE = {}


class FilterRows(exports.FilterRows):
    def info(self) -> types.ComponentInfo:
        return types.ComponentInfo(name="filter-example-py", version="0.1.0", sdk="componentize-py")

    def init(self, config: str, input: types.Schema) -> None:
        try:
            settings = json.loads(config) if config.strip() else {}
            unknown = set(settings) - {"prefixes"}
            if unknown:
                raise ValueError(f"unknown config keys: {sorted(unknown)}")
            reader = RowReader(input)
            STATE["prefixes"] = tuple(settings.get("prefixes", ["bot-", "test-"]))
            STATE["reader"] = reader
            STATE["user_id"] = reader.field("user_id")
        except Exception as e:  # init errors are reported to the host, not raised
            raise Err(str(e))

    def filter(self, input: types.Rows) -> Verdicts:
        reader, user_id, prefixes = STATE["reader"], STATE["user_id"], STATE["prefixes"]
        keep = bytearray()
        errors = []
        for i, row in enumerate(rows(input)):
            try:
                user = reader.str(row, user_id)
                keep.append(0 if user is None or user.startswith(prefixes) else 1)
            except Exception as e:
                keep.append(0)
                errors.append(types.RecordError(index=i, kind=types.ErrorKind.FAILED, message=str(e)))
        return Verdicts(keep=bytes(keep), errors=errors)
