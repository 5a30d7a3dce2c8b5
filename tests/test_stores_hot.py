"""Hot state against real redis-server processes: an outage with kill -9 and an AOF restart loses no acknowledged
update; the memory budget holds with 2,000 symbols streaming; pub/sub, bars, state hashes, stats and clean behave
the same in Redis and in memory."""
import os, signal, threading, time
from pathlib import Path

import numpy as np
import pytest

from velox.events import to_dicts
from velox.feeds.recorded import load_lean_ticks
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource, Replay
from velox.infra.resilience import CircuitBreaker, GuardedSink, SinkUnavailable
from velox.infra.services import free_port, start_redis
from velox.infra.sinks import HotSink
from velox.infra.hot import MemoryHot, hot_clean, hot_stats
from velox.infra.redis_hot import RedisHot

pytestmark = pytest.mark.redis
TICK = Path(__file__).resolve().parent.parent / 'replay/data/lean/equity/usa/tick'
DAY, SYMBOLS = '20131008', ('ibm', 'bac')


@pytest.fixture(scope='module')
def day():
    "Per symbol: (NBBO, trades) of DAY, from the recorded files."
    return {s.upper(): (consolidated_nbbo(load_lean_ticks(TICK / s / f'{DAY}_quote.zip'))[0],
                        load_lean_ticks(TICK / s / f'{DAY}_trade.zip')) for s in SYMBOLS}


def _stream(day, chunk=4096):
    "(kind, batch) across both symbols' NBBO and trades, window by window in event time, one batch per stream and window."
    srcs = [ArraySource(k, sym, b) for sym, (nb, tr) in day.items() for k, b in (('nbbo', nb), ('trade', tr))]
    return [(src.kind, b) for w in Replay(srcs, chunk_rows=chunk).windows(ordered=False) for src, b in w]


def _wait_loaded(hot, timeout=30):
    "A restarted redis-server answers BUSY LOADING until it has replayed its AOF."
    import redis
    deadline = time.monotonic() + timeout
    while True:
        try: return hot.r.ping()
        except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
            if time.monotonic() > deadline: raise
            time.sleep(0.05)


def _state(hot, cap):
    return {s: (hot.get_l1(s), hot.ticks(s, cap + 10)) for s in ('IBM', 'BAC')}


def test_no_acknowledged_hot_update_is_lost_when_redis_is_killed_and_restarted_from_its_aof(tmp_path, day):
    port, cap = free_port(), 300
    svc = start_redis(port, tmp_path / 'redis', persist=True)
    rh = RedisHot(svc.dsn)
    rh.r.connection_pool.connection_kwargs.update(socket_timeout=2, socket_connect_timeout=1)
    guarded = GuardedSink(HotSink(rh, cap=cap, every_rows=2048), attempts=2, base=0.01, cap=0.02,
                          breaker=CircuitBreaker(threshold=1, cooldown=0))  # as the worker wraps every sink
    ref = HotSink(MemoryHot(), cap=cap, every_rows=2048)  # what has been acknowledged, applied in memory
    stream = _stream(day)
    down_at, up_at = len(stream) // 3, len(stream) // 2
    acked, refused, restarted = None, 0, None
    try:
        for i, (kind, b) in enumerate(stream):
            if i == down_at: os.kill(svc.pid, signal.SIGKILL); svc.stop()  # no goodbye: SIGKILL
            if i == up_at:
                svc = start_redis(port, tmp_path / 'redis', persist=True)  # same port, same AOF
                _wait_loaded(rh)
                restarted = _state(rh, cap)
                assert restarted == acked  # every update acknowledged before the kill came back
            guarded.write(kind, b); ref.write(kind, b)
            if i % 5 == 4:
                try: guarded.flush()
                except SinkUnavailable: refused += 1; continue
                ref.flush(); acked = _state(ref.hot, cap)
                assert _state(rh, cap) == acked
        guarded.flush(); ref.flush()
        assert refused > 0 and restarted is not None
        assert _state(rh, cap) == _state(ref.hot, cap)
        for sym, (nb, tr) in day.items():  # and the end state is exactly the day's last NBBO and last prints
            assert rh.get_l1(sym) == to_dicts(nb[-1:], 'nbbo')[0]
            assert rh.ticks(sym, cap + 10) == to_dicts(tr[-cap:][::-1], 'trade')
    finally:
        rh.close(); svc.stop()


def _renamed(day, n_symbols, seed=0):
    "Real prints and NBBO rows of both symbols, each row renamed to one of `n_symbols` synthetic symbols (Zipf-like)."
    rng = np.random.default_rng(seed)
    w = 1 / np.arange(1, n_symbols + 1) ** 0.8
    names = np.array([f'SYN{i:04d}' for i in range(n_symbols)])
    out = []
    for kind, b in _stream(day, chunk=8192):
        b = b.copy()
        b['symbol'] = names[rng.choice(n_symbols, len(b), p=w / w.sum())]
        out.append((kind, b))
    return out


class _MemorySampler(threading.Thread):
    "`used_memory` from a connection of its own, every millisecond until stopped, and on demand (`sample()`)."
    def __init__(self, url):
        import redis
        super().__init__(daemon=True)
        self.r, self.samples, self.done, self.lock = redis.Redis.from_url(url), [], threading.Event(), threading.Lock()

    def sample(self) -> int:
        with self.lock: m = int(self.r.info('memory')['used_memory']); self.samples.append(m)
        return m

    def run(self):
        while not self.done.is_set(): self.sample(); time.sleep(0.001)

    def stop(self): self.done.set(); self.join(); self.r.close()


@pytest.mark.slow
def test_redis_memory_stays_under_budget_at_every_moment_with_2000_symbols_streaming(redis_url, day):
    budget_mb, n = 8, 2000
    rh = RedisHot(redis_url)
    rh.r.flushdb()
    base = rh.used_memory()
    sink = HotSink(rh, cap=200, every_rows=8192, budget_mb=budget_mb)
    mon = _MemorySampler(redis_url)
    after_write, after_flush = [], []
    def sampled(write):  # memory right after every write pipeline: where it peaks, since only writes add memory
        def w(*a, **k): write(*a, **k); after_write.append(mon.sample())
        return w
    rh._hset_many, rh._push_many = sampled(rh._hset_many), sampled(rh._push_many)
    flush = sink.flush
    def measured_flush(): flush(); after_flush.append(mon.sample())
    sink.flush = measured_flush
    stream = _renamed(day, n)
    mon.start()
    t0 = time.perf_counter()
    for kind, b in stream: sink.write(kind, b)
    sink.close()
    dt = time.perf_counter() - t0
    mon.stop()
    rows = sum(len(b) for _, b in stream)
    seen = len({s for _, b in stream for s in np.unique(b['symbol'])})
    stats = hot_stats(rh)
    peak = max(mon.samples)
    print(f"\n{seen} symbols, {rows:,} real rows renamed, {dt:.1f} s; budget {budget_mb} MB (baseline {base / 2**20:.2f} MB): "
          f"peak {peak / 2**20:.3f} MB over {len(mon.samples):,} samples ({len(after_write):,} after a write pipeline), "
          f"after each flush max {max(after_flush) / 2**20:.3f} MB; {sink.evicted} symbol evictions, "
          f"{stats['symbols']} symbols hot at the end ({stats['used_memory_mb']:.2f} MB); keys {stats['keys_per_pattern']}")
    assert seen == n and sink.evicted > 0 and len(after_flush) > 10
    assert peak <= budget_mb * 2**20  # under budget at every moment sampled, not only after flushes
    assert stats['used_memory_mb'] > 0.7 * budget_mb  # and eviction did not throw away far more than it had to
    assert stats['ttl']['healthy']
    for s in rh.symbols():  # every symbol kept is whole: evicted symbols leave no key behind, kept ones keep their L1
        assert rh.get_l1(s) is not None or rh.ticks(s, 1)
    assert not [k for k in rh.keys('l1:*') + rh.keys('ticks:*') if k.split(':', 1)[1] not in set(rh.symbols())]
    busiest = 'SYN0000'  # the most frequent name: touched by nearly every batch, so never the coldest
    assert busiest in rh.symbols() and rh.get_l1(busiest) is not None and len(rh.ticks(busiest, 1000)) == 200
    rh.r.flushdb(); rh.close()


def test_memory_hot_follows_the_same_budget_rule_after_every_write(day):
    mh = MemoryHot()
    budget = 400_000
    sink = HotSink(mh, cap=50, every_rows=4096, budget_mb=budget / 2**20)
    after = []
    for name in ('_hset_many', '_push_many'):
        write = getattr(mh, name)
        setattr(mh, name, lambda *a, _w=write, **k: (_w(*a, **k), after.append(mh.used_memory())))
    stream = _renamed(day, 300)[:40]
    for kind, b in stream: sink.write(kind, b)
    sink.close()
    assert sink.evicted > 0 and len(after) > 20
    assert max(after) <= budget and mh.used_memory() > 0.7 * budget
    assert 'SYN0000' in mh.symbols() and len(mh.ticks('SYN0000', 100)) == 50


@pytest.fixture
def hots(redis_url):
    rh = RedisHot(redis_url)
    rh.r.flushdb()
    yield rh, MemoryHot()
    rh.r.flushdb(); rh.close()


def test_a_subscriber_hears_which_symbols_each_batch_changed_in_redis_and_in_memory(hots, day):
    for hot in hots:
        with hot.subscribe('upd:*') as sub:
            sink = HotSink(hot, cap=50, every_rows=10**9)
            for kind, b in _stream(day)[:40]: sink.write(kind, b)
            sink.flush()
            got = []
            while (m := sub.get(0.5)) is not None: got.append(m)
        chans = {c for c, _ in got}
        assert chans == {'upd:l1', 'upd:ticks'}, type(hot)
        assert {s for c, m in got for s in m['symbols']} == {'IBM', 'BAC'}
    with hots[0].subscribe('other:*') as sub:
        hots[0].publish_update('upd:l1', {'symbols': ['X']})
        assert sub.get(0.2) is None


def test_bars_indicators_and_state_hashes_are_identical_in_redis_and_in_memory(hots, day):
    from velox.events import batch
    nb, tr = day['IBM']
    m = int(tr['ts'][0]) // 60_000_000_000 * 60_000_000_000
    bars = batch('bar', ts=[m, m, m + 60 * 10**9, m + 300 * 10**9], symbol=['IBM', 'IBM', 'IBM', 'BAC'], open=1, high=4,
                 low=1, close=[2, 3, 4, 2], volume=[10, 20, 30, 5], tf=[60, 300, 60, 300], trades=[1, 2, 3, 1], forming=True)
    for hot in hots:
        hot.write_bars_batch(bars)
        hot.set_indicators('IBM', {'ema_20': 181.5}); hot.set_indicators('IBM', {'rsi_14': 40.0})
        hot.put_state('pos', 'paper/IBM', {'qty': 100, 'avg_price': 181.25}); hot.put_state('pos', 'paper/IBM', {'qty': 0})
        hot.put_state('replay', 's1', {'state': 'running', 'done': 10, 'total': 99, 'speed': 2.0})
        hot.put_snapshot('detect/IBM', b'\x00\x01')
    rh, mh = hots
    for sym, tf in (('IBM', 60), ('IBM', 300), ('BAC', 300), ('BAC', 60)):
        assert rh.get_bar(sym, tf) == mh.get_bar(sym, tf)
    assert rh.get_bar('IBM', 60)['close'] == 4 / 1e8 and rh.get_bar('BAC', 60) is None
    assert rh.get_indicators('IBM') == mh.get_indicators('IBM') == {'ema_20': 181.5, 'rsi_14': 40.0}
    assert rh.states('pos') == mh.states('pos') == {'paper/IBM': {'qty': 0}}
    assert rh.get_state('replay', 's1') == mh.get_state('replay', 's1')
    assert rh.keys() == mh.keys()
    for hot in hots:  # evicting a symbol takes its bars and indicators, never snapshots or state hashes
        hot.evict(['IBM'])
        assert hot.keys() == ['bar:300:BAC', 'hot:tfs', 'hot:touch', 'pos:paper/IBM', 'replay:s1', 'snap:detect/IBM']


def test_hot_stats_count_keys_per_pattern_and_hot_clean_evicts_idle_symbols_and_repairs_ttls(hots, day):
    for hot in hots:
        sink = HotSink(hot, cap=20)
        for kind, b in _stream(day)[:40]: sink.write(kind, b)
        sink.close()
        hot.push_tick('ZZZ', {'x': 1})
        if isinstance(hot, RedisHot): hot.r.persist('ticks:ZZZ')
        else: hot._exp.pop('ticks:ZZZ')
        st = hot_stats(hot)
        assert st['keys_per_pattern'] == {'hot:*': 1, 'l1:*': 2, 'ticks:*': 3}
        assert st['symbols'] == 3 and st['ttl'] == dict(st['ttl'], ticks_with_ttl=2, ticks_without_ttl=1, healthy=False)
        assert hot_clean(hot, dry_run=True)['would_fix_ttl'] == 1
        time.sleep(1.1)
        hot.set_l1('IBM', {'bid': 1.0})  # IBM is touched again; BAC and ZZZ have been idle for over a second
        r = hot_clean(hot, idle_s=1.0)
        assert sorted(r['evicted']) == ['BAC', 'ZZZ'] and r['ttl_fixed'] == 1
        st = hot_stats(hot)
        assert st['keys_per_pattern'] == {'hot:*': 1, 'l1:*': 1, 'ticks:*': 1} and st['ttl']['healthy']
