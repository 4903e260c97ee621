"""Reading wafer rows in Python: the row format of sdk/row/FORMAT.md.

A row of n fields is a validity bitmap (ceil(n/8) bytes, bit i set = field i
present), n little-endian 8-byte slots (int, float bits, bool, or u32 offset +
u32 length of str/bytes data), then the data. This module gives user code
named, typed access on top of a batch.
"""

import struct


class RowReader:
    """Reads fields by name from rows of one schema."""

    def __init__(self, schema):
        self.n = len(schema.fields)
        self.validity = (self.n + 7) // 8
        self.index = {f.name: i for i, f in enumerate(schema.fields)}

    def field(self, name):
        """Index of a field; raises if the input has no such field."""
        if name not in self.index:
            raise ValueError(f"the input has no field `{name}`")
        return self.index[name]

    def present(self, row, i):
        return row[i // 8] >> (i % 8) & 1 == 1

    def str(self, row, i):
        if not self.present(row, i):
            return None
        off, length = struct.unpack_from("<II", row, self.validity + 8 * i)
        return bytes(row[off:off + length]).decode("utf-8")

    def int(self, row, i):
        if not self.present(row, i):
            return None
        return struct.unpack_from("<q", row, self.validity + 8 * i)[0]

    def float(self, row, i):
        if not self.present(row, i):
            return None
        return struct.unpack_from("<d", row, self.validity + 8 * i)[0]


def rows(batch):
    """Yields each row of a batch as a memoryview."""
    data = memoryview(batch.data)
    start = 0
    for end in batch.ends:
        yield data[start:end]
        start = end
