"""The detect worker notebook, executed by papermill against a real Kafka-protocol broker: one member and two
members of a consumer group give the alerts of the notebook runner; a malformed message is dead-lettered."""
import json, re, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from velox.infra.kafka_bus import KafkaBus
from velox.infra.codecs import decode_message
from velox.infra.bus import is_control
from velox.infra.topics import dlq_topic
from bus_util import read_topic
from velox.feeds.recorded import Catalog
from velox.runtime.stages import DETECT_INPUTS, publish_replay
from velox.detect.params import detect_stage
from velox.core import clock_ns
from velox.feeds.replay import Replay
from velox.infra.services import start_broker, start_redis
from velox.runtime.runners import run_frame

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / 'nbs' / 'workers' / 'detect.ipynb'
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
CAT = Catalog(ROOT / 'replay' / 'data')
SRCS = [s for sym in ('IBM', 'BAC') for s in CAT.find(sym, DAY)]
T0, T1 = clock_ns(DAY, '10:00', 'start'), clock_ns(DAY, '10:40', 'end')


def canon(a): return a[np.lexsort((a['kind'], a['trade_seq'], a['ts'], a['symbol']))]


@pytest.fixture(scope='module')
def expected():
    data = {k: np.concatenate([(lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load()) for s in SRCS if s.kind == k])
            for k in ('quote', 'trade')}
    return canon(run_frame(detect_stage(), data)['alert'])


def _members(n, dsn, tmp):
    procs = []
    for i in range(n):
        cmd = [sys.executable, '-m', 'papermill', str(NB), str(tmp / f'out{i}.ipynb'), '--no-progress-bar',
               '-p', 'bus', dsn + KW, '-p', 'group', 'detect', '-p', 'client_id', f'w{i}',
               '-p', 'status_path', str(tmp / f'status{i}.json'), '-p', 'log_path', str(tmp / f'w{i}.log'),
               '-y', 'until_end: true', '-y', 'max_runtime_s: 170']
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _wait_stable_assignment(n, tmp, procs, partitions=12, timeout=90):
    "Until every member reports its share and together they own every input partition exactly once."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None: pytest.fail(f"worker exited early:\n{p.stdout.read()}")
        try: shares = [json.loads((tmp / f'status{i}.json').read_text())['assignment'] for i in range(n)]
        except (FileNotFoundError, json.JSONDecodeError): shares = None
        if shares and all(shares):
            owned = [tuple(tp) for s in shares for tp in s]
            if len(owned) == len(set(owned)) == partitions: return shares
        time.sleep(0.5)
    pytest.fail('the consumer group did not settle')


@pytest.mark.slow
@pytest.mark.parametrize('members', [1, 2])
def test_worker_notebooks_in_one_group_give_the_notebook_runners_alerts(members, expected, tmp_path):
    with start_broker() as broker:
        procs = _members(members, broker.dsn, tmp_path)
        shares = _wait_stable_assignment(members, tmp_path, procs)
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        bus.create_topics(list(DETECT_INPUTS))
        if members == 2:  # a malformed message in the stream: dead-lettered, the worker keeps going
            bus.produce('market.trades', b'\x00\x01 garbage', key='IBM')
        n = publish_replay(bus, Replay(SRCS, start=T0, end=T1))
        assert n > 50_000
        for p in procs:
            out, _ = p.communicate(timeout=180)
            assert p.returncode == 0, out
        stats = [json.loads((tmp_path / f'status{i}.json').read_text()) for i in range(members)]
        assert all(s['state'] == 'stopped' for s in stats)
        assert sum(s['events'] for s in stats) == n
        msgs = read_topic(bus, 'alerts.darkpool')
        got = np.concatenate([decode_message(m.value)[1] for m in msgs if not is_control(m)])
        _, first = np.unique(got['id'], return_index=True)  # at-least-once: a consumer dedupes by id
        np.testing.assert_array_equal(canon(got[np.sort(first)]), expected)
        if members == 2:
            assert sum(s['dead_letters'] for s in stats) == 1
            dl = read_topic(bus, dlq_topic('market.trades'))
            assert len(dl) == 1 and dl[0].value == b'\x00\x01 garbage' and dl[0].headers['velox-error']
            assert all(s for s in shares), 'both members owned partitions'
        bus.close()


def summary_counts(stdout:str) -> dict:
    "The alert counts `velox run` printed: the total, per kind, and the outside-NBBO line's count."
    total = re.search(r'^  alerts +([\d,]+)   (.*)$', stdout, re.M)
    outside = re.search(r'^  outside-NBBO +([\d,]+)   ', stdout, re.M)
    assert total and outside, stdout
    num = lambda x: int(x.replace(',', ''))
    kinds = dict((k, num(v)) for k, v in (kv.rsplit(' ', 1) for kv in total.group(2).split(', ')))
    return {'total': num(total.group(1)), 'by_kind': kinds, 'outside_nbbo': num(outside.group(1))}


def expected_counts(alerts) -> dict:
    kinds, n = np.unique(alerts['kind'], return_counts=True)
    return {'total': len(alerts), 'by_kind': dict(zip(kinds.tolist(), n.tolist())),
            'outside_nbbo': int((alerts['kind'] == 'outside_nbbo').sum())}


@pytest.mark.slow
def test_velox_run_on_real_kafka_and_redis_equals_the_embedded_run(tmp_path, expected):
    with start_broker() as broker, start_redis() as redis_svc:
        args = ['run', '--symbols', 'IBM,BAC', '--date', DAY, '--start', '10:00', '--end', '10:40', '--no-progress',
                '--no-report', '--out-dir', str(tmp_path)]
        r = subprocess.run([sys.executable, '-m', 'velox.face.cli', *args, '--bus', broker.dsn + KW, '--hot', redis_svc.dsn],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr
        assert summary_counts(r.stdout) == expected_counts(expected), r.stdout
        import redis
        l1 = redis.Redis.from_url(redis_svc.dsn).hgetall('l1:IBM')
        assert l1, 'the run wrote IBM L1 to Redis'
    from velox.infra.stores import Store
    with Store(f"chdb://{tmp_path.absolute()}/chdb") as st:
        np.testing.assert_array_equal(canon(st.read('alert')), expected)
