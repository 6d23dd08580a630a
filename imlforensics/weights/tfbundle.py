"""Read TensorFlow 1 checkpoints (the "tensor bundle" format) without TensorFlow.

A checkpoint ``model`` is two files:

* ``model.index``: a sorted string table (the LevelDB table format): data blocks of prefix-compressed
  key/value entries, an index block pointing at them, and a 48-byte footer. The entry with the empty
  key is a ``BundleHeaderProto``; every other key is a variable name whose value is a
  ``BundleEntryProto`` (dtype, shape, shard_id, offset, size, masked crc32c).
* ``model.data-00000-of-00001``: the raw little-endian tensors, one after another.

Only what checkpoints of plain variables use is supported (one shard, uncompressed blocks, no
partitioned variables). Every block checksum, every tensor's offset/size and every tensor's crc32c
is checked; anything unexpected raises :class:`CheckpointError` with one line saying what.

Used to read the Noiseprint networks (D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera
model fingerprint", IEEE TIFS 2019), which the authors publish as TensorFlow 1 checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImlfError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
# TensorFlow DataType enum -> numpy dtype (little endian), the types a checkpoint of plain variables holds.
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 14: "<u2", 19: "<f2"}


class CheckpointError(ImlfError):
    """A checkpoint file is missing, truncated, corrupt or in a form this reader does not support."""


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The "masked" CRC that LevelDB tables and tensor bundles store."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(f"{what}: truncated or malformed varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _proto_fields(buf: bytes, what: str) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a serialized protobuf message (varint, fixed and length-delimited)."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise CheckpointError(f"{what}: truncated protobuf field")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos, what)
            if pos + length > len(buf):
                raise CheckpointError(f"{what}: truncated protobuf field")
            value = buf[pos:pos + length]
            pos += length
        else:
            raise CheckpointError(f"{what}: unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _block(data: bytes, offset: int, size: int, source: str) -> bytes:
    """One table block, its trailer (compression type + masked crc32c) checked."""
    if offset + size + 5 > len(data):
        raise CheckpointError(f"{source}: a block lies past the end of the file (truncated?)")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    if masked_crc32c(contents + bytes([kind])) != stored:
        raise CheckpointError(f"{source}: block checksum mismatch (the file is corrupt)")
    if kind != 0:
        raise CheckpointError(f"{source}: compressed table blocks (type {kind}) are not supported")
    return contents


def _block_entries(block: bytes, source: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError(f"{source}: table block too short")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError(f"{source}: malformed table block")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos, source)
        fresh, pos = _varint(block, pos, source)
        vlen, pos = _varint(block, pos, source)
        if shared > len(key) or pos + fresh + vlen > end:
            raise CheckpointError(f"{source}: malformed table entry")
        key = key[:shared] + block[pos:pos + fresh]
        pos += fresh
        entries.append((key, block[pos:pos + vlen]))
        pos += vlen
    return entries


def read_index(index_path: str | Path) -> dict[str, dict]:
    """Parse ``model.index``: variable name -> {dtype, shape, shard_id, offset, size, crc32c}."""
    path = Path(index_path)
    source = path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint index {path}: {exc.strerror or exc}") from None
    if len(data) < _FOOTER or int.from_bytes(data[-8:], "little") != _MAGIC:
        raise CheckpointError(f"{source}: not a TensorFlow checkpoint index (bad or missing table footer)")
    footer = data[-_FOOTER:-8]
    _, pos = _varint(footer, 0, source)  # metaindex handle (unused)
    _, pos = _varint(footer, pos, source)
    index_offset, pos = _varint(footer, pos, source)
    index_size, pos = _varint(footer, pos, source)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, source), source):
        offset, pos = _varint(handle, 0, source)
        size, _ = _varint(handle, pos, source)
        entries += _block_entries(_block(data, offset, size, source), source)
    keys = [k for k, _ in entries]
    if not entries or keys[0] != b"" or keys != sorted(keys):
        raise CheckpointError(f"{source}: the table has no bundle header or is not sorted")
    header = dict(_proto_fields(entries[0][1], source))
    if header.get(1, 1) != 1:
        raise CheckpointError(f"{source}: checkpoints with {header[1]} shards are not supported")
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{source}: big-endian checkpoints are not supported")
    return {key.decode("utf-8", "replace"): _entry(value, key, source) for key, value in entries[1:]}


def _entry(value: bytes, key: bytes, source: str) -> dict:
    name = key.decode("utf-8", "replace")
    what = f"{source}: entry {name!r}"
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for number, field in _proto_fields(value, what):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:
            dims = []
            for dnum, dim in _proto_fields(field, what):
                if dnum == 2:
                    dims.append(dict(_proto_fields(dim, what)).get(1, 0))
                elif dnum == 3 and dim:
                    raise CheckpointError(f"{what}: unknown rank")
            entry["shape"] = tuple(dims)
        elif number in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[number]] = field
        elif number == 6:
            entry["crc32c"] = field
        elif number == 7:
            raise CheckpointError(f"{what}: partitioned variables are not supported")
    if entry["dtype"] not in _DTYPES:
        raise CheckpointError(f"{what}: unsupported dtype {entry['dtype']}")
    return entry


def read_checkpoint(index_path: str | Path, data_path: str | Path | None = None,
                    verify_crc: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a one-shard TF1 checkpoint, by variable name (numpy arrays, native byte order).

    ``data_path`` defaults to ``<index minus .index>.data-00000-of-00001``. Offsets and sizes are
    checked against the data file; with ``verify_crc`` each tensor's stored crc32c is too.
    """
    index_path = Path(index_path)
    entries = read_index(index_path)
    if data_path is None:
        data_path = index_path.with_name(index_path.name.removesuffix(".index") + ".data-00000-of-00001")
    data_path = Path(data_path)
    try:
        data = data_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint data {data_path}: {exc.strerror or exc}") from None
    tensors: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        dtype = np.dtype(_DTYPES[e["dtype"]])
        count = int(np.prod(e["shape"], dtype=np.int64))
        where = f"{data_path.name}: tensor {name!r}"
        if e["shard_id"] != 0:
            raise CheckpointError(f"{where} is in shard {e['shard_id']}, only one shard is supported")
        if e["size"] != count * dtype.itemsize:
            raise CheckpointError(f"{where}: size {e['size']} does not match shape {e['shape']}")
        if e["offset"] + e["size"] > len(data):
            raise CheckpointError(f"{where} lies past the end of the file (truncated?)")
        raw = data[e["offset"]:e["offset"] + e["size"]]
        if verify_crc and e["crc32c"] is not None and masked_crc32c(raw) != e["crc32c"]:
            raise CheckpointError(f"{where}: checksum mismatch (the file is corrupt)")
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(dtype.newbyteorder("="))
    return tensors
