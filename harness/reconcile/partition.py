"""Partitions: `K/N` keeps the accounts whose CRC-32 of the account_id's UTF-8 bytes, modulo N,
is K - 1, so N machines can each reconcile one part of an export and their findings add up.

CRC-32 (the zlib / PNG / Ethernet one) because it is defined by a standard, not by a library
version: `zlib.crc32` in Python, `crc32()` in Spark, MySQL or Java give the same number on every
machine and every run. Engine hash functions (DuckDB's `hash()`, polars' `Series.hash()`) are
free to change between releases, which would silently move accounts between partitions.
The columnar version below runs the table-driven CRC over all strings at once, one byte
position per step.
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # numpy and polars only where columns are hashed: `gate --merge` reads
    import numpy as np  # partition names without the [reconcile] extra installed
    import polars as pl

PARTITION_PATTERN = re.compile(r"([0-9]{1,6})/([0-9]{1,6})")


def _crc_table() -> np.ndarray:
    import numpy as np

    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):  # bounded: the 8 bits of a byte
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


def parse(text: str) -> tuple[int, int]:
    """`K/N` as (K, N), 1 <= K <= N."""
    match = PARTITION_PATTERN.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"partition {text!r} must look like K/N, e.g. 1/4")
    k, n = int(match[1]), int(match[2])
    check((k, n))
    return k, n


def check(partition: tuple[int, int]) -> None:
    k, n = partition
    if not (type(k) is int and type(n) is int and 1 <= k <= n):
        raise UsageError(f"partition {k}/{n} needs 1 <= K <= N, e.g. 1/4 for the first of four")


def crc32_text(account_id: str) -> int:
    """The reference: what every machine and language computes for one account_id."""
    return zlib.crc32(account_id.encode("utf-8"))


def crc32_column(values: pl.Series) -> np.ndarray:
    """CRC-32 of each string's UTF-8 bytes (nulls hash as the empty string), vectorised."""
    import numpy as np
    import polars as pl

    arrow = values.cast(pl.Utf8).fill_null("").to_arrow(compat_level=pl.CompatLevel.oldest())
    arrow = arrow.combine_chunks() if hasattr(arrow, "combine_chunks") else arrow
    _, offsets_buffer, data_buffer = arrow.buffers()
    offset_type = np.int64 if str(arrow.type) == "large_string" else np.int32
    offsets = np.frombuffer(offsets_buffer, offset_type, len(arrow) + 1, arrow.offset)
    data = (np.frombuffer(data_buffer, np.uint8) if data_buffer is not None
            else np.zeros(0, np.uint8))
    lengths = np.diff(offsets).astype(np.int64)
    # Rows in order of length: at each byte position the rows still going are a suffix, so
    # every step is a slice, not a fancy index.
    by_length = np.argsort(np.minimum(lengths, 65535).astype(np.uint16), kind="stable")
    starts = offsets[:-1].astype(np.int64)[by_length]
    sorted_lengths = lengths[by_length]
    crc = np.full(len(arrow), 0xFFFFFFFF, np.uint32)
    table = _crc_table()
    # Bounded by the longest string: the work is the total number of bytes.
    for position in range(int(lengths.max(initial=0))):
        first = int(np.searchsorted(sorted_lengths, position, side="right"))
        state = crc[first:]
        byte = data[starts[first:] + position]
        crc[first:] = table[(state ^ byte) & 0xFF] ^ (state >> 8)
    out = np.empty_like(crc)
    out[by_length] = crc
    return out ^ np.uint32(0xFFFFFFFF)


def in_partition(account_ids: pl.Series, partition: tuple[int, int]) -> pl.Series:
    """Which rows belong to partition K of N."""
    import polars as pl

    k, n = partition
    check(partition)
    return pl.Series("in_partition", crc32_column(account_ids) % n == k - 1)


def partition_of(account_id: str, n: int) -> int:
    """The 1-based partition of one account_id among n."""
    return crc32_text(account_id) % n + 1
