"""A TensorFlow-free metrics writer: JSON lines plus TensorBoard event files.

`MetricWriter.write_scalars` records each call twice:

* one JSON object per line in `<logdir>/metrics.jsonl`, for scripts and for
  reading logs by eye;
* one TensorBoard `Event` in `<logdir>/events.out.tfevents.<time>.<hostname>`,
  so `tensorboard --logdir` shows the curves.

The event file is written by hand so that neither TensorFlow nor the protobuf
runtime is needed. Its layout is a sequence of TFRecords:

    uint64 length (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]            # a serialized Event protobuf
    uint32 masked_crc32c(data)

and the protobuf messages used are

    Event   {double wall_time = 1; int64 step = 2; string file_version = 3;
             Summary summary = 5;}
    Summary {repeated Value value = 1;}
    Value   {string tag = 1; float simple_value = 2;}

`read_event_scalars` parses the same format back, checking both CRCs of every
record; tests and tools use it to read scalars without TensorBoard.

Only local paths are supported (plain `open`), not gs:// or other remote
filesystems.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
import socket
import struct
import time
from types import TracebackType
from typing import Any, BinaryIO, Iterator, Mapping, Optional, Union

import numpy as np

from delete_jax.errors import UserError

PathLike = Union[str, os.PathLike]

JSONL_NAME = 'metrics.jsonl'
EVENT_FILE_PREFIX = 'events.out.tfevents.'
FILE_VERSION = 'brain.Event:2'

# Keys every JSON line carries; a scalar of the same name would overwrite them.
_RESERVED_KEYS = ('stage', 'step', 'time')

# --------------------------------------------------------------------------
# CRC32C (Castagnoli), as TFRecord uses it.
# --------------------------------------------------------------------------

_CRC32C_POLY = 0x82F63B78  # Reflected form of 0x1EDC6F41.
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC32C of `data` (pure Python; fine for the few small records we write)."""
  crc = _U32
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
  """The masked CRC TFRecord stores.

  Masking keeps a CRC of data that itself holds CRCs from being degenerate.
  """
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def encode_record(data: bytes) -> bytes:
  """Frames `data` as one TFRecord."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', masked_crc32c(length)) + data +
          struct.pack('<I', masked_crc32c(data)))


# --------------------------------------------------------------------------
# Minimal protobuf wire format.
# --------------------------------------------------------------------------

_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_FIXED32 = 5

_F32_MAX = float(np.finfo(np.float32).max)


def _varint(value: int) -> bytes:
  # int64 fields store negatives as their 64-bit two's complement (10 bytes).
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
  return _key(field, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _float32_bytes(value: float) -> bytes:
  if math.isfinite(value) and abs(value) > _F32_MAX:
    # struct refuses finite doubles beyond float32 range; a float32 cast makes
    # them infinite, which is what TensorBoard would show anyway.
    value = math.copysign(math.inf, value)
  return struct.pack('<f', value)


def _encode_value(tag: str, simple_value: float) -> bytes:
  # simple_value sits in a oneof, so it is written even when it is 0.0;
  # otherwise a zero would read back as "no value".
  return (_len_field(1, tag.encode('utf-8')) + _key(2, _FIXED32) +
          _float32_bytes(simple_value))


def encode_event(wall_time: float, step: int = 0,
                 file_version: Optional[str] = None,
                 scalars: Optional[Mapping[str, float]] = None) -> bytes:
  """Serializes an Event protobuf (proto3: zero step is left out)."""
  out = bytearray(_key(1, _FIXED64) + struct.pack('<d', wall_time))
  if step:
    out += _key(2, _VARINT) + _varint(step)
  if file_version is not None:
    out += _len_field(3, file_version.encode('utf-8'))
  if scalars is not None:
    summary = b''.join(_len_field(1, _encode_value(tag, value))
                       for tag, value in scalars.items())
    out += _len_field(5, summary)
  return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  value = 0
  shift = 0
  while True:
    if pos >= len(buf):
      raise ValueError('varint runs past the end of the message')
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return value, pos
    shift += 7
    if shift >= 70:
      raise ValueError('varint longer than 10 bytes')


def _iter_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
  """Yields (field number, wire type, raw value) of a serialized message."""
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      value, pos = _read_varint(buf, pos)
    elif wire_type == _FIXED64:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire_type == _LENGTH_DELIMITED:
      size, pos = _read_varint(buf, pos)
      value, pos = buf[pos:pos + size], pos + size
    elif wire_type == _FIXED32:
      value, pos = buf[pos:pos + 4], pos + 4
    else:
      raise ValueError(f'unsupported wire type {wire_type} (field {field})')
    if pos > len(buf):
      raise ValueError(f'field {field} runs past the end of the message')
    yield field, wire_type, value


def _decode_event_scalars(data: bytes) -> tuple[int, list[tuple[str, float]]]:
  """Returns (step, [(tag, simple_value)]) of one serialized Event."""
  step = 0
  values = []
  for field, wire_type, raw in _iter_fields(data):
    if field == 2 and wire_type == _VARINT:
      step = raw - (1 << 64) if raw >= 1 << 63 else raw
    elif field == 5 and wire_type == _LENGTH_DELIMITED:
      for v_field, v_type, v_raw in _iter_fields(raw):
        if v_field != 1 or v_type != _LENGTH_DELIMITED:
          continue
        tag = None
        simple_value = None
        for f, t, r in _iter_fields(v_raw):
          if f == 1 and t == _LENGTH_DELIMITED:
            tag = r.decode('utf-8')
          elif f == 2 and t == _FIXED32:
            simple_value = struct.unpack('<f', r)[0]
        # Values without simple_value (images, tensors, ...) are not scalars
        # this module wrote; they are skipped.
        if tag is not None and simple_value is not None:
          values.append((tag, simple_value))
  return step, values


# --------------------------------------------------------------------------
# Readers.
# --------------------------------------------------------------------------


def read_records(path: PathLike) -> list[bytes]:
  """Returns the payloads of a TFRecord file, checking both CRCs of each.

  Raises:
    UserError: the file cannot be read, is truncated, or a CRC does not match;
      the message names the file, the record index and its byte offset.
  """
  try:
    with open(path, 'rb') as f:
      buf = f.read()
  except OSError as e:
    raise UserError(
        f'cannot read event file {path}: {e.strerror or e}.') from None
  records = []
  pos = 0
  while pos < len(buf):
    where = f'event file {path}: record {len(records)} at byte {pos}'
    if pos + 12 > len(buf):
      raise UserError(f'{where} is truncated (header needs 12 bytes, '
                      f'{len(buf) - pos} left).')
    length_bytes = buf[pos:pos + 8]
    (length_crc,) = struct.unpack('<I', buf[pos + 8:pos + 12])
    if masked_crc32c(length_bytes) != length_crc:
      raise UserError(f'{where} is corrupted: length CRC mismatch.')
    (length,) = struct.unpack('<Q', length_bytes)
    start = pos + 12
    end = start + length
    if end + 4 > len(buf):
      raise UserError(f'{where} is truncated (needs {length + 4} more bytes, '
                      f'{len(buf) - start} left).')
    data = buf[start:end]
    (data_crc,) = struct.unpack('<I', buf[end:end + 4])
    if masked_crc32c(data) != data_crc:
      raise UserError(f'{where} is corrupted: data CRC mismatch.')
    records.append(data)
    pos = end + 4
  return records


def read_event_scalars(path: PathLike) -> list[tuple[int, str, float]]:
  """Returns every (step, tag, simple_value) of an event file, in file order.

  Values are float32 rounded to Python floats. Summary values other than
  `simple_value` are skipped.

  Raises:
    UserError: a truncated or corrupted record, or an undecodable Event.
  """
  out = []
  for i, data in enumerate(read_records(path)):
    try:
      step, values = _decode_event_scalars(data)
    except (ValueError, struct.error) as e:
      # UnicodeDecodeError is a ValueError too.
      raise UserError(f'event file {path}: record {i} is not a valid Event '
                      f'protobuf ({e}).') from None
    out.extend((step, tag, value) for tag, value in values)
  return out


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
  """Returns the objects of a JSON-lines file; blank lines are skipped.

  Raises:
    UserError: the file cannot be read or a line is not a JSON object.
  """
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.readlines()
  except OSError as e:
    raise UserError(
        f'cannot read metrics file {path}: {e.strerror or e}.') from None
  rows = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f'{path}:{number} is not valid JSON ({e.msg}).') from None
    if not isinstance(row, dict):
      raise UserError(f'{path}:{number} is not a JSON object.')
    rows.append(row)
  return rows


# --------------------------------------------------------------------------
# Writer.
# --------------------------------------------------------------------------


def _to_python(value: Any) -> Any:
  """Turns numpy/JAX scalars into Python ones; leaves everything else as is."""
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, np.generic) or (hasattr(value, '__array__') and
                                       np.ndim(value) == 0):
    # np.asarray also pulls a 0-d JAX array to the host.
    return np.asarray(value).item()
  return value


def _as_float(value: Any) -> Optional[float]:
  """Returns the value as a float for TensorBoard, or None if not numeric."""
  if not isinstance(value, numbers.Real):  # bool and int count as numbers.
    return None
  try:
    return float(value)
  except OverflowError:  # An int beyond double range.
    return math.copysign(math.inf, value)


def _json_default(value: Any) -> Any:
  # Non-serializable values (arrays, objects) still go into the log, readably.
  if hasattr(value, '__array__'):
    return np.asarray(value).tolist()
  return repr(value)


class MetricWriter:
  """Appends scalars to `metrics.jsonl` and a TensorBoard event file.

  Each `write_scalars` call is flushed to disk so the logs of a run that
  crashes (e.g. on a NaN loss) still hold everything up to the crash.

  With `enabled=False` every method is a no-op and nothing is created; pass
  `enabled=jax.process_index() == 0` so only one host writes.

  Usage:

    with MetricWriter(workdir, stage='unlearn') as writer:
      writer.write_scalars(step, {'loss': loss, 'forget_acc': acc})
  """

  def __init__(self, logdir: PathLike, *, enabled: bool = True,
               stage: str = ''):
    self.logdir = os.fspath(logdir)
    self.enabled = enabled
    self.stage = stage
    self.jsonl_path: Optional[str] = None
    self.event_path: Optional[str] = None
    self._jsonl = None
    self._events = None
    self._closed = False
    if not enabled:
      return
    try:
      os.makedirs(self.logdir, exist_ok=True)
      self.jsonl_path = os.path.join(self.logdir, JSONL_NAME)
      self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')
      self._events, self.event_path = self._open_event_file()
      self._events.write(encode_record(
          encode_event(time.time(), file_version=FILE_VERSION)))
      self.flush()
    except OSError as e:
      self.close()
      raise UserError(f'cannot write metrics to {self.logdir}: '
                      f'{e.strerror or e}.') from None

  def _open_event_file(self) -> tuple[BinaryIO, str]:
    """Creates a new event file; returns it and its path."""
    base = os.path.join(
        self.logdir,
        f'{EVENT_FILE_PREFIX}{int(time.time()):010d}.{socket.gethostname()}')
    # Two writers started in the same second (e.g. train then unlearn stages)
    # must not share a file; TensorBoard reads any name containing "tfevents".
    path = base
    suffix = 0
    while True:
      try:
        return open(path, 'xb'), path
      except FileExistsError:
        suffix += 1
        path = f'{base}.{suffix}'

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs `scalars` at `step`.

    Args:
      step: the global step (any integer, including a 0-d integer array).
      scalars: name -> value. Python, numpy and 0-d JAX numbers go to both
        files (NaN/inf included); anything else only to the JSON line.

    Raises:
      TypeError: a non-integer step or a non-string name.
      ValueError: a name that is one of 'stage', 'step', 'time', or a write
        after `close`.
    """
    if not self.enabled:
      return
    if self._closed:
      raise ValueError('MetricWriter.write_scalars called after close().')
    try:
      step = operator.index(step)
    except TypeError:
      raise TypeError(f'step must be an integer; got {step!r}.') from None
    row = {'stage': self.stage, 'step': step}
    numeric = {}
    values = {}
    for name, value in scalars.items():
      if not isinstance(name, str):
        raise TypeError(f'scalar names must be strings; got {name!r}.')
      if name in _RESERVED_KEYS:
        raise ValueError(f'scalar name {name!r} clashes with a field of every '
                         f'log line ({", ".join(_RESERVED_KEYS)}); rename it.')
      value = _to_python(value)
      values[name] = value
      as_float = _as_float(value)
      if as_float is not None:
        numeric[name] = as_float
    wall_time = time.time()
    row['time'] = wall_time
    row.update(values)
    # allow_nan keeps NaN/Infinity tokens: Python's json reads them back, and
    # a NaN loss is exactly what the log must show.
    self._jsonl.write(json.dumps(row, default=_json_default) + '\n')
    if numeric:
      self._events.write(encode_record(
          encode_event(wall_time, step=step, scalars=numeric)))
    self.flush()

  def flush(self) -> None:
    """Pushes buffered lines and records to the OS."""
    for f in (self._jsonl, self._events):
      if f is not None and not f.closed:
        f.flush()

  def close(self) -> None:
    """Flushes and closes both files; later calls do nothing."""
    if self._closed:
      return
    self._closed = True
    for f in (self._jsonl, self._events):
      if f is not None and not f.closed:
        f.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, exc_type: Optional[type[BaseException]],
               exc: Optional[BaseException],
               tb: Optional[TracebackType]) -> None:
    self.close()
