"""Promotion mid-stream on a real Kafka-protocol broker: a detect worker (`velox.runtime.promotion:DETECT_REGISTRY`)
is running over IBM 2013-10-08 from 10:00; once its watermark has passed 10:05 a new parameter version is promoted from
10:15 (a promotion from 10:01 is refused: the worker is past it), and the rest of the window is published. The alerts
before 10:15 equal a run of the old parameters over the events before 10:15, those from 10:15 a run of the new ones
over the events from 10:15 (each run built independently with `detect_stage`), and every alert names the parameter
version in force at its event time: the worker's starting set before 10:15, the promoted one from 10:15."""
import json, threading, time
from pathlib import Path
import numpy as np
import pytest
from bus_util import read_topic
from velox.core import ConfigError, clock_ns
from velox.detect.param_registry import ParamRegistry
from velox.detect.params import detect_stage, params_version
from velox.feeds.recorded import Catalog
from velox.feeds.replay import Replay
from velox.infra.bus import is_control
from velox.infra.codecs import decode_message
from velox.infra.kafka_bus import KafkaBus
from velox.infra.services import start_broker
from velox.runtime.promotion import promote
from velox.runtime.runners import run_frame
from velox.runtime.settings import RunOptions
from velox.runtime.stages import DETECT_INPUTS, publish_replay, stage_worker

pytestmark = pytest.mark.kafka
DAY = '2013-10-08'
SRCS = Catalog(Path(__file__).resolve().parent.parent / 'replay' / 'data').find('IBM', DAY)
T0, T1, TPUB, T, T_END = (clock_ns(DAY, h) for h in ('10:00', '10:05', '10:10', '10:15', '10:30'))
NEW = {'tolerance_bps': 5.0, 'min_size': 200}


def canon(a): return a[np.lexsort((a['kind'], a['trade_seq'], a['ts'], a['symbol']))]


def run_over(params, lo, hi):
    data = {s.kind: (lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)])(s.load()) for s in SRCS}
    return run_frame(detect_stage(params), data)['alert']


def wait_for(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v: return v
        time.sleep(0.2)
    pytest.fail(f'timed out waiting for {what}')


def test_promotion_mid_stream_switches_a_running_worker_at_the_stated_event_time(tmp_path):
    with start_broker() as broker:  # a broker of its own: the market topics hold only this test's events
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        try: check_promotion(bus, tmp_path)
        finally: bus.close()


def check_promotion(kafka_bus, tmp_path):
    reg = ParamRegistry(tmp_path / 'registry')
    v2 = reg.register({'darkpool': NEW})
    status, group = tmp_path / 'status', f'promo-{tmp_path.name[-8:]}'
    status.mkdir()
    kafka_bus.create_topics(list(DETECT_INPUTS) + ['alerts.darkpool', 'market.nbbo'])
    res = {}
    w = threading.Thread(target=lambda: res.update(stage_worker(
        'velox.runtime.promotion:DETECT_REGISTRY', kafka_bus, group, params={'param_registry': str(reg.root), 'param_group': group},
        options=RunOptions(until_end=True, max_runtime_s=150, status_path=str(status / 'w0.json')))), daemon=True)
    w.start()
    publish_replay(kafka_bus, Replay(SRCS, start=T0, end=TPUB), eos=False)
    read = lambda: json.loads((status / 'w0.json').read_text()) if (status / 'w0.json').exists() else {}
    wait_for(lambda: (read().get('watermark_ns') or 0) >= T1, 'the worker to pass 10:05')
    with pytest.raises(ConfigError, match='already at'): promote(reg, v2, f'{DAY} 10:01', status, group)
    promote(reg, v2, f'{DAY} 10:15', status, group)
    publish_replay(kafka_bus, Replay(SRCS, start=TPUB, end=T_END))
    w.join(timeout=170)
    assert not w.is_alive() and res.get('state') == 'stopped', res
    got = np.concatenate([decode_message(m.value)[1] for m in read_topic(kafka_bus, 'alerts.darkpool') if not is_control(m)])
    _, first = np.unique(got['id'], return_index=True)  # at-least-once: a consumer dedupes by id
    got = canon(got[np.sort(first)])
    old, new = canon(run_over(None, T0, T)), canon(run_over(NEW, T, T_END))
    assert len(old) and len(new) and len(new) != len(canon(run_over(None, T, T_END)))  # the switch changes what is found
    same = lambda a: a[[n for n in a.dtype.names if n != 'params']]  # the replays name their own versions (detect_version)
    np.testing.assert_array_equal(same(got[got['ts'] < T]), same(old))
    np.testing.assert_array_equal(same(got[got['ts'] >= T]), same(new))
    start, promoted = params_version({}), params_version({'darkpool': NEW})  # started with no sections; promoted NEW
    assert promoted == v2 and start != promoted
    assert got['params'].tolist() == [start if t < T else promoted for t in got['ts'].tolist()]
