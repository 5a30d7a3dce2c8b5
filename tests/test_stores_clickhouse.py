"""The history store on real recorded data: exact round trips, replay from the store, validated imports, versioned
migrations, and a store outage (injected: no ClickHouse server runs here, so a wrapper makes the embedded chDB store
refuse inserts the way an unreachable server would) including kill -9 in the middle of draining the spool.

chDB opens one directory per process and one at a time: every test opens its own store in a `with` block."""
import subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from velox.core import Config
from velox.events import DTYPES
from velox.feeds.recorded import Catalog, lean_tick_csv, read_bytes
from velox.feeds.replay import ArraySource, Replay
from velox.infra.resilience import GuardedSink
from velox.infra import stores
from velox.infra.stores import Store, db_migrate
from velox.infra.sinks import RefusingStore, StoreRetry, StoreSink
from velox.infra.spool import Spool
from velox.infra.datamgr import StoreSource, import_recorded
from velox.infra.stores import stored_days

ROOT = Path(__file__).resolve().parent.parent
CAT = Catalog(ROOT / 'replay' / 'data')
DAY, SYMBOLS = '2013-10-08', ('IBM', 'BAC')


@pytest.fixture(scope='module')
def day_sources():
    "The recorded quote and trade streams of both symbols on DAY, loaded once."
    return {s.key: (s, s.load()) for sym in SYMBOLS for s in CAT.find(sym, DAY)}


def _ordered(b):
    return b[np.lexsort((b['symbol'], b['seq'], b['ts']))]


def _replay_windows(day_sources):
    "(kind, batch) in event-time order across every stream, as a runner hands them to its sinks."
    srcs = [ArraySource(s.kind, s.symbol, b, key=k) for k, (s, b) in day_sources.items()]
    return [(src.kind, b) for src, b in Replay(srcs, chunk_rows=8192)]


@pytest.mark.slow
def test_every_real_tick_of_a_day_round_trips_through_clickhouse_exactly(tmp_path, day_sources):
    with Store(f'chdb://{tmp_path}/chdb').migrate() as st:
        sink = StoreSink(st, kinds=None, batch_rows=50_000)
        for kind, b in _replay_windows(day_sources): sink.write(kind, b)
        sink.close()
        for key, (s, b) in day_sources.items():
            back = st.read(s.kind, s.symbol)
            assert back.dtype == b.dtype and len(back) == len(b), key
            assert np.array_equal(back, b), key  # prices, ns times, venues, condition masks: all exact
            assert np.array_equal(back['ts'], b['ts']) and np.array_equal(back['price' if s.kind == 'trade' else 'bid'],
                                                                         b['price' if s.kind == 'trade' else 'bid'])
        for kind in ('trade', 'quote'):
            every = np.concatenate([b for s, b in day_sources.values() if s.kind == kind])
            assert np.array_equal(st.read(kind), _ordered(every))  # both symbols, ordered by (time, seq)
            assert st.count(kind) == st.count(kind, final=False) == len(every)


@pytest.mark.slow
def test_a_stored_day_replays_exactly_as_the_recorded_files(tmp_path):
    with Store(f'chdb://{tmp_path}/chdb').migrate() as st:
        rep = import_recorded(st, CAT, symbols=SYMBOLS, days=DAY, progress=False)
        assert rep.ok, rep.text()
        files = [s for sym in SYMBOLS for s in CAT.find(sym, DAY)]
        srcs = [StoreSource(st, s.kind, s.symbol, s.day) for s in files]
        got, last = {s.key: [] for s in srcs}, -1
        for src, b in Replay(srcs, chunk_rows=20_000):
            assert b['ts'][0] >= last
            last = int(b['ts'][-1]); got[src.key].append(b)
        for s in files:  # re-split by source, the replayed stream is every recorded file, byte for byte
            assert lean_tick_csv(np.concatenate(got[s.key]), s.kind, s.day) == read_bytes(s.path).decode(), s.key
        t = stored_days(st)
        assert sorted(zip(t.symbol, t.kind, t.rows)) == sorted((s.symbol, s.kind, s.rows) for s in files)
        assert set(t.date) == {DAY}


def test_import_reports_rows_order_and_duplicates_and_a_second_import_stores_nothing_twice(tmp_path):
    with Store(f'chdb://{tmp_path}/chdb').migrate() as st:
        first = import_recorded(st, CAT, symbols=['ibm'], days=[DAY.replace('-', '')], kinds='trade', progress=False)
        second = import_recorded(st, CAT, symbols=['ibm'], days=[DAY], kinds='trade', progress=False)
        (a,), (b,) = first.rows, second.rows
        assert a['rows'] == a['stored'] == CAT.find('IBM', DAY, 'trade')[0].rows and a['store_dups'] == 0
        assert a['ordered'] and a['dup_keys'] == 0 and first.ok
        assert b['stored'] == a['rows'] and b['store_dups'] == a['rows'] and second.ok  # physically twice, read once
        assert 'all valid' in second.text()


def test_migrations_are_recorded_applied_once_and_a_kind_added_later_gets_its_table(tmp_path, monkeypatch):
    cfg = Config.load(env={}, store=f'chdb://{tmp_path}/chdb')
    r1 = db_migrate(cfg)
    assert [v for v, _ in r1['applied']] == [m.version for m in stores.MIGRATIONS] and r1['version'] == stores.MIGRATIONS[-1].version
    r2 = db_migrate(cfg)
    assert r2['applied'] == [] and r2['migrations'] == r1['migrations']
    # a later issue adds a kind: a dtype and one migration line
    monkeypatch.setitem(DTYPES, 'score', np.dtype([('ts', 'i8'), ('symbol', 'U12'), ('score', 'f8'), ('id', 'U32')]))
    monkeypatch.setattr(stores, 'MIGRATIONS', list(stores.MIGRATIONS))
    stores.add_migration(r1['version'] + 1, 'scores', stores.ddl('score'))
    r3 = db_migrate(cfg)
    assert r3['applied'] == [(r1['version'] + 1, 'scores')]
    with Store(cfg.store_dsn) as st:
        sig = np.zeros(3, DTYPES['score']); sig['ts'] = [3, 1, 2]; sig['symbol'] = 'X'; sig['id'] = ['c', 'a', 'b']
        st.insert('score', sig); st.insert('score', sig)
        assert st.read('score')['id'].tolist() == ['a', 'b', 'c'] and st.count('score') == 3


@pytest.mark.slow
def test_while_clickhouse_refuses_writes_the_spool_holds_every_batch_and_drains_it_exactly_once(tmp_path, day_sources):
    windows = _replay_windows(day_sources)
    with Store(f'chdb://{tmp_path}/chdb').migrate() as st:
        store = RefusingStore(st)  # fault injection: refuses inserts like an unreachable server while `down`
        sink = StoreSink(store, kinds=None, batch_rows=20_000, spool=tmp_path / 'store.spool',
                         retries=StoreRetry(retry_s=0.01, max_retry_s=0.05))
        guarded = GuardedSink(sink, sleep=lambda s: None)  # as the worker wraps every sink
        a, b = len(windows) // 3, 2 * len(windows) // 3
        spooled_during_outage = 0
        for i, (kind, batch) in enumerate(windows):
            store.down = a <= i < b
            guarded.write(kind, batch)
            if i % 500 == 499:
                guarded.flush()  # a checkpoint (a worker takes one about every second): returns (acknowledged) even while the store is down
                assert guarded.pending == 0
                if store.down: spooled_during_outage = max(spooled_during_outage, sink.spool.pending_rows)
        assert not store.down
        guarded.close()
        assert spooled_during_outage > 0 and sink.rows_spooled > 0 and sink.rows_drained == sink.rows_spooled
        assert sink.spool.pending == 0
        for key, (s, b) in day_sources.items():
            assert np.array_equal(st.read(s.kind, s.symbol), b), key
        total = sum(len(b) for _, b in day_sources.values())
        assert st.count('trade') + st.count('quote') == total
        assert st.count('trade', final=False) + st.count('quote', final=False) == total  # nothing doubled at all


DRAIN = """
import sys, time
from velox.infra.stores import Store
from velox.infra.sinks import StoreSink
class Slow:  # says when each insert is done, then dawdles before the sink can record it as drained
    def __init__(self, st): self.st = st
    def insert(self, kind, b):
        n = self.st.insert(kind, b); print(n, flush=True); time.sleep(float(sys.argv[3])); return n
st = Store(sys.argv[1])
StoreSink(Slow(st), batch_rows=30_000, spool=sys.argv[2]).close(); st.close()
"""


@pytest.mark.slow
def test_kill_9_in_the_middle_of_draining_the_spool_and_a_restart_still_store_each_event_exactly_once(tmp_path, day_sources):
    dsn, spool = f'chdb://{tmp_path}/chdb', str(tmp_path / 'store.spool')
    with Store(dsn).migrate() as st:  # an outage from the start: the whole day goes to the spool
        sink = StoreSink(RefusingStore(st, down=True), kinds=None, batch_rows=30_000, spool=spool, retries=StoreRetry(retry_s=60))
        for kind, b in _replay_windows(day_sources): sink.write(kind, b)
        sink.close()
        assert st.count('trade') == st.count('quote') == 0
    with Spool(spool) as sp: total = sp.pending
    assert total >= 6
    p = subprocess.Popen([sys.executable, '-c', DRAIN, dsn, spool, '0.5'], stdout=subprocess.PIPE, text=True)
    inserted = [p.stdout.readline() for _ in range(3)]  # three batches inserted; the third not yet marked drained
    time.sleep(0.1)
    p.kill(); p.wait()
    with Spool(spool) as sp: left = sp.pending
    assert all(inserted) and 0 < left < total and total - left < len(inserted)
    r = subprocess.run([sys.executable, '-c', DRAIN, dsn, spool, '0'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with Spool(spool) as sp: assert sp.pending == 0
    with Store(dsn) as st:
        for key, (s, b) in day_sources.items():
            assert np.array_equal(st.read(s.kind, s.symbol), b), key
        assert st.count('trade') + st.count('quote') == sum(len(b) for _, b in day_sources.values())
