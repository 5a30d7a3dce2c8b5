"RedisHot against a live Redis: it must behave exactly like MemoryHot on real market data."
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velox.core import ns_to_iso
from velox.events import PRICE_SCALE, to_dicts
from velox.feeds.recorded import load_lean_ticks
from velox.market.nbbo import consolidated_nbbo
from velox.infra.sinks import HotSink
from velox.infra.hot import MemoryHot
from velox.infra.redis_hot import RedisHot
from velox.infra.connect import hot_from_dsn

pytestmark = pytest.mark.redis
TICK = Path(__file__).resolve().parent.parent / 'replay/data/lean/equity/usa/tick'
DAY = '20131008'
SYMBOLS = ('ibm', 'bac')


def _nbbo(sym):
    nb, _ = consolidated_nbbo(load_lean_ticks(TICK / sym / f'{DAY}_quote.zip'))
    return nb


def _trades(sym): return load_lean_ticks(TICK / sym / f'{DAY}_trade.zip')


def _merged(parts):
    b = np.concatenate(parts)
    return b[np.lexsort((b['seq'], b['symbol'], b['ts']))]


@pytest.fixture(scope='module')
def nbbo(): return _merged([_nbbo(s) for s in SYMBOLS])


@pytest.fixture(scope='module')
def trades(): return _merged([_trades(s) for s in SYMBOLS])


@pytest.fixture
def hots(redis_url):
    rh = RedisHot(redis_url)
    rh.r.flushdb()
    yield rh, MemoryHot()
    rh.r.flushdb()
    rh.close()


def _frames(b, n=8192): return [b[i:i + n] for i in range(0, len(b), n)]


def test_l1_after_write_l1_batch_is_the_last_nbbo_row_per_symbol_in_both_stores(hots, nbbo):
    rh, mh = hots
    for f in _frames(nbbo):
        rh.write_l1_batch(f); mh.write_l1_batch(f)
    last = pd.DataFrame({n: nbbo[n] for n in nbbo.dtype.names}).groupby('symbol').last()
    assert sorted(last.index) == ['BAC', 'IBM']
    for sym, row in last.iterrows():
        expected = {'type': 'nbbo', 'timestamp': ns_to_iso(row.ts), 'symbol': sym,
                    'bid': row.bid / PRICE_SCALE, 'bid_size': row.bid_size, 'ask': row.ask / PRICE_SCALE,
                    'ask_size': row.ask_size, 'bid_venue': row.bid_venue, 'ask_venue': row.ask_venue, 'seq': row.seq}
        assert rh.get_l1(sym) == expected
        assert mh.get_l1(sym) == expected
        assert type(rh.get_l1(sym)['seq']) is int and type(rh.get_l1(sym)['bid']) is float
    assert rh.get_l1('NOPE') is None and mh.get_l1('NOPE') is None
    assert rh.keys('l1:*') == mh.keys('l1:*') == ['l1:BAC', 'l1:IBM']
    assert rh.keys() == mh.keys() == ['hot:touch', 'l1:BAC', 'l1:IBM']  # + the last-touch index of the memory budget


def test_set_l1_merges_fields_the_same_way_in_both_stores(hots):
    rh, mh = hots
    for h in hots:
        h.set_l1('XYZ', {'bid': 10.25, 'ask': 10.5, 'bid_venue': 'N', 'halted': False})
        h.set_l1('XYZ', {'bid': 10.3, 'seq': 7})
    assert rh.get_l1('XYZ') == mh.get_l1('XYZ') == {'bid': 10.3, 'ask': 10.5, 'bid_venue': 'N', 'halted': False, 'seq': 7}


def test_ticks_are_capped_newest_first_with_a_ttl_and_identical_in_both_stores(hots, trades):
    rh, mh = hots
    cap, ttl = 200, 3600
    for f in _frames(trades, 5000):
        rh.write_ticks_batch(f, cap=cap, ttl_s=ttl); mh.write_ticks_batch(f, cap=cap, ttl_s=ttl)
    extra = to_dicts(trades[-1:], 'trade')[0] | {'seq': -1}
    rh.push_tick(extra['symbol'], extra, cap=cap, ttl_s=ttl); mh.push_tick(extra['symbol'], extra, cap=cap, ttl_s=ttl)
    for sym in ('IBM', 'BAC'):
        mine = trades[trades['symbol'] == sym]
        expected = to_dicts(mine[::-1][:cap], 'trade')
        if sym == extra['symbol']: expected = [extra] + expected[:cap - 1]
        assert rh.ticks(sym, n=10_000) == mh.ticks(sym, n=10_000) == expected
        assert rh.ticks(sym, n=5) == expected[:5]
        assert rh.r.llen(f'ticks:{sym}') == cap
        assert 0 < rh.ttl(f'ticks:{sym}') <= ttl and 0 < mh.ttl(f'ticks:{sym}') <= ttl
    assert rh.ticks('NOPE') == mh.ticks('NOPE') == []
    assert rh.ttl('ticks:NOPE') is None and mh.ttl('ticks:NOPE') is None


def test_snapshots_round_trip_bytes_exactly(hots):
    rh, mh = hots
    blob = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    for h in hots:
        h.put_snapshot('detector/IBM', blob)
        h.put_snapshot('detector/BAC', b'\x00\xff')
    assert rh.get_snapshot('detector/IBM') == mh.get_snapshot('detector/IBM') == blob
    assert rh.get_snapshot('missing') is None and mh.get_snapshot('missing') is None
    assert rh.keys('snap:*') == mh.keys('snap:*') == ['snap:detector/BAC', 'snap:detector/IBM']
    assert rh.ttl('snap:detector/IBM') is None


def test_hot_sink_gives_the_same_state_on_redis_and_in_memory(hots, nbbo, trades):
    rh, mh = hots
    sinks = [HotSink(rh, cap=100), HotSink(mh, cap=100)]
    for kind, b in (('nbbo', nbbo), ('trade', trades)):
        for f in _frames(b, 4096):
            for s in sinks: s.write(kind, f)
    for s in sinks: s.close()
    assert rh.keys() == mh.keys()
    for sym in ('IBM', 'BAC'):
        assert rh.get_l1(sym) == mh.get_l1(sym)
        assert rh.ticks(sym, 1000) == mh.ticks(sym, 1000)
        assert len(rh.ticks(sym, 1000)) == 100


def test_hot_from_dsn_opens_redis(redis_url):
    with hot_from_dsn(redis_url) as h:
        assert isinstance(h, RedisHot)
        assert h.r.ping()


def test_prints_are_stored_compact_and_lists_written_before_still_dedupe_and_read_back(hots, trades):
    "A list left by the JSON-object encoding: new prints after its head are pushed compact, the overlap is skipped."
    from collections import deque
    from velox.infra.hot import encode_value
    rh, mh = hots
    ibm = trades[trades['symbol'] == 'IBM'][:300]
    old = [encode_value(d) for d in to_dicts(ibm[:100], 'trade')]
    rh.r.lpush('ticks:IBM', *old)
    mh._d['ticks:IBM'] = deque(reversed(old))  # index 0 is the head, as LPUSH leaves it
    for h in hots: h.write_ticks_batch(ibm[50:], cap=1000)
    want = to_dicts(ibm[::-1], 'trade')
    assert rh.ticks('IBM', 1000) == mh.ticks('IBM', 1000) == want  # 300 prints: the 50 re-sent were not doubled
    head, tail = rh.r.lindex('ticks:IBM', 0), rh.r.lindex('ticks:IBM', -1)
    assert head.startswith(b'["') and len(head) < len(encode_value(want[0])) / 2, head
    assert tail == old[0].encode()
