"""Acceptance of the worker fleet: `velox fleet` runs the whole stage graph — detect, features, predict.lr,
predict.gbt, ensemble, execution and persist — as papermill worker notebooks against a real Kafka-protocol broker
and redis-server (checkpoints); a real window is replayed onto market.*; a detect worker's kernel is killed with
SIGKILL mid-stream and restarted by the supervisor; detect is scaled 1 -> 3 mid-run; the launcher stops
everything. Alerts, indicators, predictions, signals, orders, fills and positions on the topics (deduplicated by
id, as consumers must) and the rows in the store (FINAL) equal what `velox run --models` computes in one process
on the same data, and every output notebook of a run that was not killed is complete."""
import json, os, signal, subprocess, sys, threading, time, uuid
from datetime import datetime
from pathlib import Path
import numpy as np
import pytest
import yaml
from bus_util import wait_for
from velox.infra.kafka_bus import KafkaBus
from velox.infra.codecs import decode_message
from velox.infra.bus import is_control, publish_eos
from velox.feeds.recorded import Catalog
from velox.runtime.fleet import file_sha256, notebook_complete
from velox.runtime.launcher import fleet_status, runs
from velox.runtime.stages import PERSIST_TOPICS, features_stage, publish_replay, trading_stage
from velox.core import clock_ns
from velox.feeds.replay import Replay
from velox.infra.services import start_broker, start_redis
from velox.runtime.runners import run_frame, run_replay
from velox.infra.topics import apply as create_topics, topic_spec

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
SRCS = [s for sym in ('IBM', 'BAC') for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)]
T0, TMID, T1 = (clock_ns(DAY, t, 't') for t in ('10:00', '10:15', '10:30'))
OUT = {'alerts.darkpool': 'alert', 'features.indicators': 'indicator', 'predictions.lr': 'prediction', 'predictions.gbt': 'prediction',
       **{f'signals.{s}': 'signal' for s in ('raw', 'calibrated', 'filtered', 'final')}, 'orders.events': 'order',
       'orders.fills': 'fill', 'positions.updates': 'position'}


def canon(a): return a[np.lexsort((a['trade_seq'], a['ts'], a['symbol']))]


def unique_rows(a):
    "Distinct rows (byte-identical duplicates are re-deliveries), in a canonical order."
    v = np.ascontiguousarray(a).view(np.dtype((np.void, a.dtype.itemsize)))
    return a[np.unique(v, return_index=True)[1]]


def velox(*args, timeout=120):
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"velox {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def fresh_status(fd, name):
    "The member's worker status, if written by its current run."
    m = fleet_status(fd).get('members', {}).get(name)
    if not m or m['state'] != 'running' or not m['run']: return None
    p = fd / 'status' / f'{name}.json'
    try:
        if p.stat().st_mtime < datetime.fromisoformat(m['run']['started']).timestamp(): return None
        return json.loads(p.read_text())
    except (OSError, ValueError): return None


def settled(fd, stage, n, partitions):
    "Members 0..n-1 of `stage` (current runs) together own every input partition exactly once."
    shares = [fresh_status(fd, f'{stage}-{i}') for i in range(n)]
    if not all(s and s['assignment'] for s in shares): return None
    owned = [tuple(tp) for s in shares for tp in s['assignment']]
    return shares if len(owned) == len(set(owned)) == partitions else None


class TopicReader:
    "One consumer that keeps reading the output topics, de-duplicating as a consumer must."
    def __init__(self, bus, topics):
        self.c, self.parts = bus.consumer(topics, f'check-{uuid.uuid4().hex[:6]}'), {t: [] for t in topics}

    def read(self):
        for m in self.c.poll(timeout_ms=500, max_records=10_000):
            if not is_control(m): self.parts[m.topic].append(decode_message(m.value)[1])
        return {t: np.concatenate(v) if v else None for t, v in self.parts.items()}


def without(a, *fields):
    "A copy of `a` with `fields` zeroed (what legitimately differs between runs, e.g. measured inference time)."
    a = a.copy()
    for f in fields: a[f] = 0
    return a


def by_id(a): return a[np.lexsort((a['id'], a['ts']))]


def dedupe(a): return a[np.sort(np.unique(a['id'], return_index=True)[1])]


ENS = {'min_tier': 'D'}  # trade every signal that passes the filters: the window is short
EXEC = {'accounts': [{'name': 'paper', 'strategies': [{'name': 'ensemble', 'limits': {'max_position': 300}}]}]}


def test_fleet_runs_the_whole_stage_graph_scaled_and_crashed_mid_run_with_exactly_velox_runs_outputs(tmp_path):
    data = {k: np.concatenate([(lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load()) for s in SRCS if s.kind == k])
            for k in ('quote', 'trade')}
    # the reference: what `velox run --models` computes in one process on the same window
    reg = tmp_path / 'models'
    velox('models', 'train', '--days', '2013-10-09,2013-10-10', '--registry', str(reg), '--promote', timeout=300)
    ref = run_replay(trading_stage(reg, execution=EXEC, ensemble=ENS), Replay(SRCS, start=T0, end=T1),
                     collect=('alert', 'nbbo', 'prediction', 'signal', 'order', 'fill', 'position')).outputs
    alerts_ref, nbbo_ref = canon(ref['alert']), ref['nbbo']
    ind_ref = unique_rows(run_frame(features_stage(), {'trade': data['trade']})['indicator'])
    assert len(ref['order']) > 10 and len(ref['fill']) > 5, 'the window must trade for the comparison to mean something'
    fd, chdb = tmp_path / 'fleet', f'chdb://{tmp_path}/chdb'
    (tmp_path / 'execution.yaml').write_text(yaml.safe_dump(EXEC)); (tmp_path / 'ensemble.yaml').write_text(yaml.safe_dump(ENS))
    t_start = time.monotonic()
    parts = lambda topics: sum(topic_spec(t).partitions for t in topics)
    with start_broker() as broker, start_redis() as redis_svc:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        create_topics(bus, models=('lr', 'gbt'))
        fleet_file = tmp_path / 'fleet.yaml'
        fleet_file.write_text(yaml.safe_dump({
            'params': {'bus': broker.dsn + KW, 'checkpoints': redis_svc.dsn, 'registry': str(reg)},
            'stages': {'detect': 1, 'features': 1, 'predict.lr': 1, 'predict.gbt': 1,
                       'ensemble': {'count': 1, 'params': {'params': str(tmp_path / 'ensemble.yaml')}},
                       'execution': {'count': 1, 'params': {'params': str(tmp_path / 'execution.yaml')}},
                       'persist': {'count': 1, 'params': {'store': chdb}}},
            'restart': {'backoff_s': 0.5}, 'stop_timeout_s': 90}))
        try:
            velox('fleet', 'start', '--fleet', str(fleet_file), '--fleet-dir', str(fd))
            wait_for('the first members to join their groups', lambda: settled(fd, 'detect', 1, 12) and settled(fd, 'features', 1, 6)
                     and settled(fd, 'predict.lr', 1, 6) and settled(fd, 'predict.gbt', 1, 6) and settled(fd, 'ensemble', 1, 12)
                     and settled(fd, 'execution', 1, 13) and settled(fd, 'persist', 1, parts(PERSIST_TOPICS)), timeout=240)
            reader = TopicReader(bus, list(OUT))

            # phase A: the first 15 minutes at 100x real time; detect-0's kernel is killed mid-stream
            pub = threading.Thread(target=publish_replay, args=(bus, Replay(SRCS, start=T0, end=TMID, speed=100)), kwargs={'eos': False})
            pub.start()
            wait_for('detect-0 to checkpoint some work', lambda: (fresh_status(fd, 'detect-0') or {}).get('commits', 0) >= 2
                     and fresh_status(fd, 'detect-0')['events'] > 0, timeout=60, every=0.05)
            kernel = fleet_status(fd)['members']['detect-0']['kernel_pid']
            assert kernel, 'the supervisor knows the kernel pid'
            os.kill(kernel, signal.SIGKILL)
            pub.join()
            wait_for('detect-0 to be restarted', lambda: fleet_status(fd)['members']['detect-0']['restarts'] == 1
                     and settled(fd, 'detect', 1, 12), timeout=120)

            # phase B: scale detect 1 -> 3, then the last 15 minutes and end-of-stream markers (risk.commands ends too)
            assert 'detect' in velox('fleet', 'scale', 'detect', '3', '--fleet-dir', str(fd))
            wait_for('three detect members to share the partitions', lambda: settled(fd, 'detect', 3, 12), timeout=150)
            publish_replay(bus, Replay(SRCS, start=TMID, end=T1))
            publish_eos(bus, 'risk.commands', []); bus.flush()
            want = {'alerts.darkpool': len(alerts_ref), 'orders.events': len(ref['order']), 'orders.fills': len(ref['fill']),
                    'positions.updates': len(ref['position']), 'signals.raw': int((ref['signal']['stage'] == 'raw').sum())}

            def complete(o):
                return all(o[t] is not None and len(np.unique(o[t]['id'])) >= n for t, n in want.items()) \
                    and o['features.indicators'] is not None and len(unique_rows(o['features.indicators'])) >= len(ind_ref)
            try: wait_for('every output', lambda: complete(reader.read()), timeout=240)
            except BaseException:
                o = reader.read()
                raise AssertionError('outputs short of velox run: ' + str({t: (None if o[t] is None else len(np.unique(o[t]['id'])), n) for t, n in want.items()})
                                     + f"; statuses {[(n, (fresh_status(fd, n) or {}).get('watermark_ns'), (fresh_status(fd, n) or {}).get('late')) for n in ('execution-0', 'ensemble-0', 'detect-0')]}") from None
            n_in = len(data['trade']) + len(data['quote']) + len(nbbo_ref) + len(alerts_ref) + sum(len(ref[k]) for k in ref if k not in ('nbbo', 'alert'))
            wait_for('persist to consume every output', lambda: (fresh_status(fd, 'persist-0') or {}).get('events', 0) >= n_in, timeout=90)
            out = reader.read(); reader.c.close()
            status_text = velox('fleet', 'status', '--fleet-dir', str(fd))
            assert 'detect-2' in status_text and 'running' in status_text
        finally:
            velox('fleet', 'stop', '--fleet-dir', str(fd), timeout=300)
        bus.close()

    # nothing lost, nothing doubled: topic outputs (deduplicated by id) equal velox run's
    al = out['alerts.darkpool']
    np.testing.assert_array_equal(canon(dedupe(al)), alerts_ref)
    ind = unique_rows(out['features.indicators'])
    assert ind.tobytes() == ind_ref.tobytes()
    pred = np.concatenate([out['predictions.lr'], out['predictions.gbt']])
    np.testing.assert_array_equal(by_id(without(dedupe(pred), 'infer_us')), by_id(without(ref['prediction'], 'infer_us')))
    sig = np.concatenate([out[f'signals.{s}'] for s in ('raw', 'calibrated', 'filtered', 'final')])
    np.testing.assert_array_equal(by_id(dedupe(sig)), by_id(ref['signal']))
    for t, k in (('orders.events', 'order'), ('orders.fills', 'fill'), ('positions.updates', 'position')):
        np.testing.assert_array_equal(by_id(dedupe(out[t])), by_id(ref[k]), err_msg=t)
    # ... and so do the stored rows, written by the persist worker (the store's only writer), read with FINAL
    from velox.infra.stores import Store
    with Store(chdb) as st:
        assert st.count('trade') == len(data['trade']) and st.count('quote') == len(data['quote'])
        assert st.count('nbbo') == len(nbbo_ref)
        np.testing.assert_array_equal(canon(st.read('alert')), alerts_ref)
        for k in ('signal', 'order', 'fill', 'position'): np.testing.assert_array_equal(by_id(st.read(k)), by_id(ref[k]), err_msg=k)
        np.testing.assert_array_equal(by_id(without(st.read('prediction'), 'infer_us')), by_id(without(ref['prediction'], 'infer_us')))

    # the supervisor's record: one crash (restarted), every other run stopped cleanly with a complete notebook
    st = fleet_status(fd)
    assert not st['running'] and st['members']['detect-0']['restarts'] == 1
    assert all(m['state'] == 'stopped' for m in st['members'].values()), st['members']
    ends = [r for r in runs(fd) if r['event'] == 'end']
    crashed = [r for r in ends if r['rc'] != 0]
    assert [r['member'] for r in crashed] == ['detect-0'] and not crashed[0]['complete']
    clean = [r for r in ends if r['rc'] == 0]
    assert sorted(r['member'] for r in clean) == ['detect-0', 'detect-1', 'detect-2', 'ensemble-0', 'execution-0', 'features-0',
                                                    'persist-0', 'predict.gbt-0', 'predict.lr-0']
    for r in clean:
        assert r['complete'] and notebook_complete(r['output']) == (True, 'complete'), r
        nb = json.loads(Path(r['output']).read_text())
        assert all(c['execution_count'] for c in nb['cells'] if c['cell_type'] == 'code')
        assert r['notebook_sha256'] == file_sha256(ROOT / 'nbs' / 'workers' / f"{r['stage'].split('.')[0]}.ipynb")
        assert r['parameters']['checkpoints'] == redis_svc.dsn and r['parameters']['client_id'] == r['member']
        assert r['code']['code_hash'] and (r['code']['git_commit'] or r['code']['velox_version'])
        assert yaml.safe_load(Path(r['parameters_file']).read_text()) == r['parameters']
    stats = {r['member']: json.loads((fd / 'status' / f"{r['member']}.json").read_text()) for r in clean}
    assert all(s['state'] == 'stopped' for s in stats.values())
    assert stats['detect-0']['restored'] >= 1, 'the restarted member resumed from checkpointed state'
    print(f"fleet acceptance: {time.monotonic() - t_start:.0f} s; {len(alerts_ref)} alerts, {len(ind_ref)} indicator rows, "
          f"{len(ref['signal'])} signals, {len(ref['order'])} order events, {len(ref['fill'])} fills")
