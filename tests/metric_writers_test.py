"""Tests for delete_jax.metric_writers (no TensorFlow needed)."""

import glob
import math
import os
import socket
import struct

import numpy as np
import pytest

from delete_jax import metric_writers
from delete_jax.errors import UserError


def _event_file(logdir):
  paths = glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))
  assert len(paths) == 1, paths
  return paths[0]


def _f32(x):
  return float(np.float32(x))


# Steps and values spanning zero, negatives, big steps and float32 rounding.
_HISTORY = [
    (0, {'loss': 2.302585, 'acc': 0.0}),
    (1, {'loss': 1.5, 'acc': 0.125}),
    (250, {'loss': 0.1 + 0.2, 'acc': 0.9999999}),
    (2**40, {'loss': -3.75e-7, 'acc': 1.0}),
]


def test_crc32c_known_vectors():
  assert metric_writers.crc32c(b'') == 0
  assert metric_writers.crc32c(b'123456789') == 0xE3069283
  # RFC 3720 (iSCSI) B.4 vectors.
  assert metric_writers.crc32c(bytes(32)) == 0x8A9136AA
  assert metric_writers.crc32c(b'\xff' * 32) == 0x62A8AB43
  assert metric_writers.crc32c(bytes(range(32))) == 0x46DD794E


def test_masked_crc32c_matches_formula():
  crc = 0xE3069283
  expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32
  assert metric_writers.masked_crc32c(b'123456789') == expected


def test_record_framing_layout():
  record = metric_writers.encode_record(b'abc')
  assert len(record) == 8 + 4 + 3 + 4
  assert struct.unpack('<Q', record[:8]) == (3,)
  assert record[12:15] == b'abc'
  assert struct.unpack('<I', record[15:]) == (
      metric_writers.masked_crc32c(b'abc'),)


def test_round_trip(tmp_path):
  with metric_writers.MetricWriter(tmp_path, stage='train') as writer:
    for step, scalars in _HISTORY:
      writer.write_scalars(step, scalars)
  got = metric_writers.read_event_scalars(_event_file(tmp_path))
  want = [(step, tag, _f32(value))
          for step, scalars in _HISTORY for tag, value in scalars.items()]
  assert got == want

  rows = metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in rows] == [s for s, _ in _HISTORY]
  for row, (_, scalars) in zip(rows, _HISTORY):
    assert row['stage'] == 'train'
    assert isinstance(row['time'], float)
    # JSON keeps full double precision.
    assert {k: row[k] for k in scalars} == scalars


def test_first_record_is_file_version(tmp_path):
  with metric_writers.MetricWriter(tmp_path):
    pass
  records = metric_writers.read_records(_event_file(tmp_path))
  assert len(records) == 1
  assert b'brain.Event:2' in records[0]
  assert metric_writers.read_event_scalars(_event_file(tmp_path)) == []


def test_event_file_name(tmp_path):
  with metric_writers.MetricWriter(tmp_path):
    pass
  name = os.path.basename(_event_file(tmp_path))
  prefix = 'events.out.tfevents.'
  assert name.startswith(prefix)
  stamp, host = name[len(prefix):].split('.', 1)  # Hostnames may hold dots.
  assert stamp.isdigit() and len(stamp) == 10
  assert host.startswith(socket.gethostname())


def test_two_writers_same_dir_get_separate_event_files(tmp_path):
  with metric_writers.MetricWriter(tmp_path, stage='train') as a, \
      metric_writers.MetricWriter(tmp_path, stage='unlearn') as b:
    a.write_scalars(1, {'loss': 1.0})
    b.write_scalars(1, {'loss': 2.0})
  paths = sorted(glob.glob(os.path.join(tmp_path, 'events.out.tfevents.*')))
  assert len(paths) == 2
  values = sorted(v for p in paths
                  for _, _, v in metric_writers.read_event_scalars(p))
  assert values == [1.0, 2.0]
  rows = metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['stage'], r['loss']) for r in rows] == [('train', 1.0),
                                                    ('unlearn', 2.0)]


def test_nan_inf_and_non_numeric_values(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(3, {
        'nan': float('nan'),
        'inf': float('inf'),
        'ninf': -np.inf,
        'huge': 1e300,  # Beyond float32: becomes +inf in the event file.
        'np32': np.float32(0.5),
        'np_int': np.int64(7),
        'zero_d': np.array(2.5),
        'flag': True,
        'note': 'hello',
        'nothing': None,
        'vector': np.array([1, 2]),
    })
  events = {tag: v for step, tag, v in
            metric_writers.read_event_scalars(_event_file(tmp_path))}
  assert set(events) == {'nan', 'inf', 'ninf', 'huge', 'np32', 'np_int',
                         'zero_d', 'flag'}
  assert math.isnan(events['nan'])
  assert events['inf'] == math.inf and events['huge'] == math.inf
  assert events['ninf'] == -math.inf
  assert (events['np32'], events['np_int'], events['zero_d'],
          events['flag']) == (0.5, 7.0, 2.5, 1.0)

  (row,) = metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert math.isnan(row['nan']) and row['inf'] == math.inf
  assert row['np_int'] == 7 and row['zero_d'] == 2.5 and row['flag'] is True
  assert row['note'] == 'hello' and row['nothing'] is None
  assert row['vector'] == [1, 2]


def test_only_non_numeric_writes_no_event(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {'note': 'x'})
  assert len(metric_writers.read_records(_event_file(tmp_path))) == 1
  assert len(metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')) == 1


def test_negative_step_round_trips(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(-1, {'x': 1.0})
    writer.write_scalars(np.int32(5), {'x': 2.0})
  assert metric_writers.read_event_scalars(_event_file(tmp_path)) == [
      (-1, 'x', 1.0), (5, 'x', 2.0)]


def test_bad_inputs(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match='step'):
      writer.write_scalars(1, {'step': 1.0})
    with pytest.raises(TypeError, match='integer'):
      writer.write_scalars(1.5, {'x': 1.0})
    with pytest.raises(TypeError, match='strings'):
      writer.write_scalars(1, {3: 1.0})
  with pytest.raises(ValueError, match='close'):
    writer.write_scalars(1, {'x': 1.0})
  writer.close()  # A second close is harmless.


@pytest.mark.parametrize('where, what', [
    (0, 'length CRC'),   # The uint64 length.
    (9, 'length CRC'),   # The length's CRC.
    (20, 'data CRC'),    # The Event payload.
    (-1, 'data CRC'),    # The payload's CRC.
])
def test_corrupted_byte_is_reported(tmp_path, where, what):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {'loss': 1.0, 'acc': 0.5})
  path = _event_file(tmp_path)
  first_record_size = 16 + len(metric_writers.read_records(path)[0])
  data = bytearray(open(path, 'rb').read())
  data[where if where < 0 else first_record_size + where] ^= 0x01
  with open(path, 'wb') as f:
    f.write(data)
  with pytest.raises(
      UserError,
      match=rf'record 1 at byte {first_record_size} is corrupted: {what}'):
    metric_writers.read_event_scalars(path)


def test_truncated_file_is_reported(tmp_path):
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {'loss': 1.0})
  path = _event_file(tmp_path)
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:-3])
  with pytest.raises(UserError, match='truncated'):
    metric_writers.read_event_scalars(path)


def test_missing_files_are_reported(tmp_path):
  with pytest.raises(UserError, match='cannot read'):
    metric_writers.read_event_scalars(tmp_path / 'nope')
  with pytest.raises(UserError, match='cannot read'):
    metric_writers.read_jsonl(tmp_path / 'nope.jsonl')


def test_bad_jsonl_line_is_reported(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n\n{"step": \n')
  with pytest.raises(UserError, match=r'metrics.jsonl:3'):
    metric_writers.read_jsonl(path)


def test_disabled_writes_nothing(tmp_path):
  logdir = tmp_path / 'sub'
  with metric_writers.MetricWriter(logdir, enabled=False) as writer:
    writer.write_scalars(1, {'loss': 1.0})
    writer.flush()
  assert not logdir.exists()
  assert writer.event_path is None and writer.jsonl_path is None


def test_appends_to_existing_jsonl(tmp_path):
  for stage in ('train', 'unlearn'):
    with metric_writers.MetricWriter(tmp_path, stage=stage) as writer:
      writer.write_scalars(1, {'loss': 1.0})
  rows = metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['stage'] for r in rows] == ['train', 'unlearn']


def test_matches_tensorboard_reader(tmp_path):
  pytest.importorskip('tensorboard')
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.backend.event_processing import event_file_loader
  # pylint: enable=g-import-not-at-top

  with metric_writers.MetricWriter(tmp_path) as writer:
    for step, scalars in _HISTORY:
      writer.write_scalars(step, scalars)
    writer.write_scalars(7, {'nan': float('nan')})

  # The legacy loader yields events as stored; EventFileLoader would migrate
  # simple_value into tensors.
  events = list(event_file_loader.LegacyEventFileLoader(
      _event_file(tmp_path)).Load())
  assert events[0].file_version == 'brain.Event:2'
  got = [(e.step, v.tag, v.simple_value)
         for e in events[1:] for v in e.summary.value]
  ours = metric_writers.read_event_scalars(_event_file(tmp_path))
  assert got[:-1] == ours[:-1]
  assert got[-1][:2] == (7, 'nan') and math.isnan(got[-1][2])

  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert sorted(acc.Tags()['scalars']) == ['acc', 'loss', 'nan']
  assert [(e.step, e.value) for e in acc.Scalars('loss')] == [
      (step, _f32(scalars['loss'])) for step, scalars in _HISTORY]


def test_encoding_matches_protobuf_serializer():
  pytest.importorskip('tensorboard')
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2

  ours = metric_writers.encode_event(
      123.25, step=42, scalars={'loss': 0.5, 'zero': 0.0})
  event = event_pb2.Event(wall_time=123.25, step=42)
  event.summary.value.add(tag='loss', simple_value=0.5)
  event.summary.value.add(tag='zero', simple_value=0.0)
  assert ours == event.SerializeToString(deterministic=True)

  header = metric_writers.encode_event(1.5, file_version='brain.Event:2')
  assert header == event_pb2.Event(
      wall_time=1.5, file_version='brain.Event:2').SerializeToString()


def test_jax_scalars(tmp_path):
  jnp = pytest.importorskip('jax.numpy')
  with metric_writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(jnp.int32(4), {'loss': jnp.asarray(1.5),
                                        'acc': jnp.float32(0.25)})
  assert metric_writers.read_event_scalars(_event_file(tmp_path)) == [
      (4, 'loss', 1.5), (4, 'acc', 0.25)]
  (row,) = metric_writers.read_jsonl(tmp_path / 'metrics.jsonl')
  assert (row['step'], row['loss'], row['acc']) == (4, 1.5, 0.25)
