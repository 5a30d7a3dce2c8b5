"""Poison-proof workers against a real Kafka-protocol broker (velox.runtime.poison).

1. One worker, one poll's worth of poison among good rows: a 3 MiB message that is no frame, a message whose key is
   not UTF-8, and a real print whose size is set to MARKER, on which the stage raises after processing its window.
   Its alerts and NBBO equal `run_frame` on the data without that print (the failed window's state was rolled back),
   and each poison message is in `dlq.market.trades` exactly once, with its reason (the 3 MiB one as a reference and
   an excerpt).
2. A stage that kills its process (`os._exit`) on the poison print, run by the launcher as a papermill worker
   notebook of a one-member fleet: after two deaths the message is dead-lettered for repeated failure, the member
   (restarted twice) finishes the stream with the outputs of the data without the print, and the fleet runs on.
"""
import json, os, uuid
from pathlib import Path
import numpy as np
import pytest
from bus_util import read_topic, wait_for
import poison_stage
from poison_stage import MARKER
from velox.core import clock_ns
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.infra.bus import key_bytes, partition_for, publish, publish_eos
from velox.infra.codecs import decode_message, encode_arrow
from velox.infra.kafka_bus import KafkaBus
from velox.infra.services import start_broker, start_redis
from velox.infra.topics import topic_spec
from velox.runtime.fleet import FleetSpec
from velox.runtime.launcher import fleet_start, fleet_status, fleet_stop, runs
from velox.runtime.runners import run_frame
from velox.runtime.stages import stage_worker
from velox.runtime.worker import RunOptions, WorkerSettings

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
DAY = '2013-10-08'
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
TESTS = str(Path(__file__).resolve().parent)


def window(start, end):
    "IBM's quotes and trades of 2013-10-08 between two exchange times."
    t0, t1 = clock_ns(DAY, start, 'start'), clock_ns(DAY, end, 'end')
    return {s.kind: (lambda b: b[(b['ts'] >= t0) & (b['ts'] < t1)])(s.load())
            for s in Catalog(ROOT / 'replay' / 'data').find('IBM', DAY) if s.kind in ('quote', 'trade')}


def poison_print(data):
    "The index of an IBM print that makes an alert (so leaving it out shows), its copy of MARKER shares, and the data without it."
    ref = run_frame(detect_stage(), data)['alert']
    ref = ref[ref['trade_seq'] >= 0]  # alerts about one print
    r = int(np.flatnonzero(data['trade']['seq'] == ref['trade_seq'][len(ref) // 2])[0])
    p = data['trade'][r:r + 1].copy()
    p['size'] = MARKER
    return r, p, {'quote': data['quote'], 'trade': np.delete(data['trade'], r)}


def raw_producer(bus):
    "A plain kafka-python producer: any bytes, any key, up to 8 MiB (a velox producer would refuse these)."
    from kafka import KafkaProducer
    return KafkaProducer(bootstrap_servers=bus.bootstrap, max_request_size=8 << 20)


def send(producer, value, key):
    md = producer.send('market.trades', value=value, key=key).get(30)
    return md.partition, md.offset


def outputs(bus):
    "Alerts (deduplicated by id, as a consumer must) and NBBO rows (distinct) on the output topics, in a canonical order."
    a = np.concatenate([decode_message(m.value)[1] for m in read_topic(bus, 'alerts.darkpool')])
    a = a[np.unique(a['id'], return_index=True)[1]]
    n = np.unique(np.concatenate([decode_message(m.value)[1] for m in read_topic(bus, 'market.nbbo')]))
    return a[np.lexsort((a['id'], a['ts']))], n[np.lexsort((n['seq'], n['ts']))]


def expected(data):
    ref = run_frame(detect_stage(), data)
    a, n = ref['alert'], ref['nbbo']
    return a[np.lexsort((a['id'], a['ts']))], n[np.lexsort((n['seq'], n['ts']))]


def assert_same(got, want):
    for g, w, what in zip(got, want, ('alerts', 'NBBO')):
        assert len(g) == len(w) and (g == w).all(), f"{what}: {len(g)} rows on the topic, {len(w)} from run_frame"


def test_one_poll_of_poison_is_dead_lettered_once_each_and_the_outputs_are_run_frames_without_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(TESTS)
    data = window('10:00', '10:10')
    r, poison, clean = poison_print(data)
    big = bytes(range(256)) * (3 << 12)  # 3 MiB, no frame
    with start_broker() as broker:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        publish(bus, 'market.quotes', 'quote', data['quote'], rows_per_frame=512)
        publish(bus, 'market.trades', 'trade', data['trade'][:r], rows_per_frame=512)
        bus.flush()
        raw = raw_producer(bus)
        sent = {'big': send(raw, big, b'IBM'),  # the poison, between good frames of the same partition: one poll's worth
                'key': send(raw, encode_arrow('trade', data['trade'][r + 1:r + 3]), b'\xff\xfe'),
                'raise': send(raw, encode_arrow('trade', poison), b'IBM')}
        raw.close()
        publish(bus, 'market.trades', 'trade', data['trade'][r + 1:], rows_per_frame=512)
        for t in ('market.quotes', 'market.trades'): publish_eos(bus, t, ['IBM'])
        bus.flush()
        assert sent['big'][0] == sent['raise'][0] == partition_for('IBM', topic_spec('market.trades').partitions)

        stats = stage_worker('poison_stage:raising_spec', bus, group='poison', settings=WorkerSettings(client_id='w0'),
                             options=RunOptions(until_end=True, max_runtime_s=180, status_path=str(tmp_path / 'w0.json')))
        assert (stats['state'], stats['dead_letters'], stats['error']) == ('stopped', 3, None)
        assert_same(outputs(bus), expected(clean))
        ref = detect_stage(); run_frame(ref, clean)  # the stage counted every good print once, and never the poison:
        assert poison_stage.built[-1].inner.stages[1].state['IBM']['counts'] == ref.stages[1].state['IBM']['counts']

        dlq = read_topic(bus, 'dlq.market.trades')
        at = {(int(m.headers['velox-partition']), int(m.headers['velox-offset'])): m for m in dlq}
        assert len(dlq) == len(at) == 3 and set(at) == set(sent.values()), [(m.headers, len(m.value)) for m in dlq]
        m = at[sent['big']]  # as a reference (where it is, its size) and its first 64 KiB
        assert (m.value, m.headers['velox-size'], m.headers['velox-excerpt']) == (big[:65536], b'3145728', b'65536')
        assert m.headers['velox-topic'] == b'market.trades' and m.headers['velox-error'].startswith(b'neither a frame')
        m = at[sent['key']]  # as it came: value and key bytes
        assert (key_bytes(m.key), m.value) == (b'\xff\xfe', encode_arrow('trade', data['trade'][r + 1:r + 3]))
        assert m.headers['velox-error'] == b"message key b'\\xff\\xfe' is not UTF-8"
        m = at[sent['raise']]  # its rows the stage did not process
        assert m.headers['velox-error'] == f'stage raised ValueError: a print of {MARKER} shares'.encode()
        assert (decode_message(m.value)[1] == poison).all() and key_bytes(m.key) == b'IBM'
        assert json.loads((tmp_path / 'w0.json').read_text())['state'] == 'stopped'
        bus.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_message_that_kills_the_worker_process_ends_in_the_dlq_as_repeated_failure_and_the_fleet_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')]))  # for the workers' kernels
    data = window('10:00', '10:05')
    r, poison, clean = poison_print(data)
    fd = tmp_path / 'fleet'
    with start_broker() as broker, start_redis() as redis_svc:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        publish(bus, 'market.quotes', 'quote', data['quote'], rows_per_frame=256)
        publish(bus, 'market.trades', 'trade', data['trade'][:r], rows_per_frame=256)
        bus.flush()
        raw = raw_producer(bus)
        where = send(raw, encode_arrow('trade', poison), b'IBM')
        raw.close()
        publish(bus, 'market.trades', 'trade', data['trade'][r + 1:], rows_per_frame=256)
        for t in ('market.quotes', 'market.trades'): publish_eos(bus, t, ['IBM'])
        bus.flush()

        spec = FleetSpec.from_dict({
            'params': {'bus': broker.dsn + KW, 'checkpoints': redis_svc.dsn},
            'stages': {'poison': {'count': 1, 'notebook': str(ROOT / 'nbs' / 'workers' / 'custom.ipynb'),
                                  'params': {'stage': 'poison_stage:dying', 'group': f'poison-{uuid.uuid4().hex[:6]}',
                                             'until_end': True, 'max_runtime_s': 240}}},
            'restart': {'backoff_s': 0.5}, 'stop_timeout_s': 60}, root=ROOT)
        try:
            fleet_start(spec, fd)
            def finished():
                m = fleet_status(fd).get('members', {}).get('poison-0')
                return m if m and m['state'] in ('completed', 'stopped') else None
            member = wait_for('the member to finish the stream', finished, timeout=400)
            st = fleet_status(fd)
            assert st['running'] and member['state'] == 'completed', member  # the fleet goes on
            ends = [e for e in runs(fd) if e['event'] == 'end']
            assert member['restarts'] == 2 and [e['rc'] != 0 for e in ends] == [True, True, False], ends
            assert all(e['error'].startswith('the worker process died') for e in ends[:2]) and ends[2]['error'] is None, ends
            assert member['worker']['state'] == 'stopped' and member['worker']['dead_letters'] == 1, member['worker']

            dlq = read_topic(bus, 'dlq.market.trades')
            assert len(dlq) == 1, [m.headers for m in dlq]
            m = dlq[0]
            assert (int(m.headers['velox-partition']), int(m.headers['velox-offset'])) == where
            assert m.headers['velox-error'] == b'repeated failure (the worker died 2 times processing it)'
            assert (decode_message(m.value)[1] == poison).all()
            assert_same(outputs(bus), expected(clean))  # the rows after the poison were processed, and nothing of it
        finally:
            fleet_stop(fd)
            bus.close()
