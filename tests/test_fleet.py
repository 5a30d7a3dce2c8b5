"""Acceptance of the worker fleet: `velox fleet` runs detect + features + persist as papermill worker notebooks
against a real Kafka-protocol broker and redis-server (checkpoints); a real window is replayed onto market.*;
a detect worker's kernel is killed with SIGKILL mid-stream and restarted by the supervisor; detect is scaled
1 -> 3 mid-run; the launcher stops everything. Outputs on the topics (deduplicated by id, as consumers must) and
rows in the store (FINAL) equal the notebook runner's on the same data, and every output notebook of a run
that was not killed is complete."""
import json, os, signal, subprocess, sys, threading, time, uuid
from datetime import datetime
from pathlib import Path
import numpy as np
import pytest
import yaml
from velox.bus import KafkaBus, decode_message, is_eos
from velox.feeds import Catalog
from velox.launcher import fleet_status, file_sha256, notebook_complete, runs
from velox.pipeline import features_stage, detect_stage, publish_replay, _clock
from velox.replay import Replay
from velox.services import start_broker, start_redis
from velox.stage import run_frame

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
SRCS = [s for sym in ('IBM', 'BAC') for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)]
T0, TMID, T1 = (_clock(DAY, t, 't') for t in ('10:00', '10:15', '10:30'))
TOPICS = ['market.quotes', 'market.trades', 'market.nbbo', 'alerts.darkpool', 'features.indicators']


def canon(a): return a[np.lexsort((a['trade_seq'], a['ts'], a['symbol']))]


def unique_rows(a):
    "Distinct rows (byte-identical duplicates are re-deliveries), in a canonical order."
    v = np.ascontiguousarray(a).view(np.dtype((np.void, a.dtype.itemsize)))
    return a[np.unique(v, return_index=True)[1]]


def velox(*args, timeout=120):
    r = subprocess.run([sys.executable, '-m', 'velox.cli', *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"velox {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def wait_for(what, pred, timeout=120, every=0.25):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got: return got
        if time.monotonic() > deadline: pytest.fail(f'timed out waiting for {what}')
        time.sleep(every)


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
            if not is_eos(m): self.parts[m.topic].append(decode_message(m.value)[1])
        return {t: np.concatenate(v) if v else None for t, v in self.parts.items()}


def test_fleet_scaled_and_crashed_mid_run_gives_exactly_the_notebook_runners_outputs(tmp_path):
    data = {k: np.concatenate([(lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load()) for s in SRCS if s.kind == k])
            for k in ('quote', 'trade')}
    ref = run_frame(detect_stage(), data)
    alerts_ref, nbbo_ref = canon(ref['alert']), ref['nbbo']
    ind_ref = unique_rows(run_frame(features_stage(), {'trade': data['trade']})['indicator'])
    fd, chdb = tmp_path / 'fleet', f'chdb://{tmp_path}/chdb'
    t_start = time.monotonic()
    with start_broker() as broker, start_redis() as redis_svc:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        bus.create_topics(TOPICS)
        fleet_file = tmp_path / 'fleet.yaml'
        fleet_file.write_text(yaml.safe_dump({
            'params': {'bus': broker.dsn + KW, 'checkpoints': redis_svc.dsn},
            'stages': {'detect': 1, 'features': 1, 'persist': {'count': 1, 'params': {'store': chdb}}},
            'restart': {'backoff_s': 0.5}, 'stop_timeout_s': 90}))
        try:
            velox('fleet', 'start', '--fleet', str(fleet_file), '--fleet-dir', str(fd))
            wait_for('the first members to join their groups', lambda: settled(fd, 'detect', 1, 12) and settled(fd, 'features', 1, 6)
                     and settled(fd, 'persist', 1, 24), timeout=150)
            reader = TopicReader(bus, ['alerts.darkpool', 'features.indicators'])

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

            # phase B: scale detect 1 -> 3, then the last 15 minutes and end-of-stream markers
            assert 'detect' in velox('fleet', 'scale', 'detect', '3', '--fleet-dir', str(fd))
            wait_for('three detect members to share the partitions', lambda: settled(fd, 'detect', 3, 12), timeout=150)
            publish_replay(bus, Replay(SRCS, start=TMID, end=T1))
            n_in = len(data['trade']) + len(data['quote']) + len(nbbo_ref) + len(alerts_ref)
            wait_for('every output', lambda: (lambda o: o['alerts.darkpool'] is not None and o['features.indicators'] is not None
                     and len(np.unique(o['alerts.darkpool']['id'])) >= len(alerts_ref)
                     and len(unique_rows(o['features.indicators'])) >= len(ind_ref))(reader.read()), timeout=120)
            wait_for('persist to consume every input', lambda: (fresh_status(fd, 'persist-0') or {}).get('events', 0) >= n_in, timeout=60)
            out = reader.read(); reader.c.close()
            status_text = velox('fleet', 'status', '--fleet-dir', str(fd))
            assert 'detect-2' in status_text and 'running' in status_text
        finally:
            velox('fleet', 'stop', '--fleet-dir', str(fd), timeout=300)
        bus.close()

    # nothing lost, nothing doubled: topic outputs (deduplicated by id) equal the notebook runner's
    al = out['alerts.darkpool']
    np.testing.assert_array_equal(canon(al[np.sort(np.unique(al['id'], return_index=True)[1])]), alerts_ref)
    ind = unique_rows(out['features.indicators'])
    assert ind.tobytes() == ind_ref.tobytes()
    # ... and so do the stored rows, written by the persist worker (the store's only writer), read with FINAL
    from velox.stores import Store
    with Store(chdb) as st:
        assert st.count('trade') == len(data['trade']) and st.count('quote') == len(data['quote'])
        assert st.count('nbbo') == len(nbbo_ref)
        np.testing.assert_array_equal(canon(st.read('alert')), alerts_ref)

    # the supervisor's record: one crash (restarted), every other run stopped cleanly with a complete notebook
    st = fleet_status(fd)
    assert not st['running'] and st['members']['detect-0']['restarts'] == 1
    assert all(m['state'] == 'stopped' for m in st['members'].values()), st['members']
    ends = [r for r in runs(fd) if r['event'] == 'end']
    crashed = [r for r in ends if r['rc'] != 0]
    assert [r['member'] for r in crashed] == ['detect-0'] and not crashed[0]['complete']
    clean = [r for r in ends if r['rc'] == 0]
    assert sorted(r['member'] for r in clean) == ['detect-0', 'detect-1', 'detect-2', 'features-0', 'persist-0']
    for r in clean:
        assert r['complete'] and notebook_complete(r['output']) == (True, 'complete'), r
        nb = json.loads(Path(r['output']).read_text())
        assert all(c['execution_count'] for c in nb['cells'] if c['cell_type'] == 'code')
        assert r['notebook_sha256'] == file_sha256(ROOT / 'nbs' / 'workers' / f"{r['stage']}.ipynb")
        assert r['parameters']['checkpoints'] == redis_svc.dsn and r['parameters']['client_id'] == r['member']
        assert r['code']['code_hash'] and (r['code']['git_commit'] or r['code']['velox_version'])
        assert yaml.safe_load(Path(r['parameters_file']).read_text()) == r['parameters']
    stats = {r['member']: json.loads((fd / 'status' / f"{r['member']}.json").read_text()) for r in clean}
    assert all(s['state'] == 'stopped' for s in stats.values())
    assert stats['detect-0']['restored'] >= 1, 'the restarted member resumed from checkpointed state'
    print(f"fleet acceptance: {time.monotonic() - t_start:.0f} s; {len(alerts_ref)} alerts, {len(ind_ref)} indicator rows")
