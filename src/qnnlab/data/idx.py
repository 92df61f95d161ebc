"""IDX files (MNIST, Fashion-MNIST): a big-endian header then the raw array.

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d, then d
32-bit big-endian sizes. LeCun et al., http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from qnnlab.data.errors import DatasetError

TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The file's payload, gunzipped when it ends in .gz; a broken gzip stream is named."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(
            f"{path}: cannot be read ({exc}); the file is corrupt or truncated, delete it and fetch it again"
        ) from None


def parse_idx(data: bytes, source: str) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in TYPES:
        raise DatasetError(f"{source}: not an IDX file (bad magic number); is it the right file?")
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = np.dtype(TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{source}: IDX file holds {len(data)} bytes but its header {shape} needs "
            f"{expected}; the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
