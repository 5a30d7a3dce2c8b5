"""VPIN (issue 19) against a plain loop that fills volume buckets print by print, on a real day; properties."""
from pathlib import Path
import numpy as np
import pytest
from velox.core import Session
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.market.vpin import bucket_flow, buy_shares, vpin, vpin_alerts

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'


def loop_buckets(ts, size, share, V):
    "Fill buckets of V one print at a time, splitting a print at a boundary; (fill time, buy volume) of full buckets."
    out, room, buy = [], V, 0.0
    for t, s, w in zip(ts, size, share):
        while s > 0:
            take = min(s, room)
            buy += take * w; room -= take; s -= take
            if room <= 1e-9 * V:
                out.append((t, buy)); room, buy = V, 0.0
    return out


def loop_vpin(buys, V, n):
    imb = [abs(2 * b - V) / V for b in buys]
    return [float('nan')] * (n - 1) + [sum(imb[i - n + 1:i + 1]) / n for i in range(n - 1, len(imb))]


@pytest.fixture(scope='module')
def ibm():
    q, t = Catalog(DATA).find('IBM', '2013-10-08')
    tr, nb = t.load(), consolidated_nbbo(q.load())[0]
    return tr[Session().contains(tr['ts']) & (tr['size'] > 0)], nb


@pytest.mark.parametrize('method', ['bvc', 'tick', 'lee_ready'])
def test_vpin_equals_a_plain_loop_on_a_real_day(ibm, method):
    tr, nb = ibm
    share = buy_shares(tr, method, nb)
    V = float(tr['size'].sum()) / 50
    t, buy = bucket_flow(tr['ts'], tr['size'], share, V)
    ref = loop_buckets(tr['ts'].tolist(), tr['size'].tolist(), share.tolist(), V)
    assert len(t) == len(ref) in (49, 50)
    assert t.tolist() == [r[0] for r in ref]
    np.testing.assert_allclose(buy, [r[1] for r in ref], rtol=1e-9, atol=1e-6)
    got, want = vpin(buy, V, 10), loop_vpin([r[1] for r in ref], V, 10)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.nanmin(got) >= 0 and np.nanmax(got) <= 1


def test_buy_shares_by_bvc_equal_a_loop_over_minute_bars(ibm):
    import math, statistics
    tr, _ = ibm
    got = buy_shares(tr, 'bvc')
    bars = {}
    for ts, p in zip(tr['ts'].tolist(), tr['price'].tolist()): bars.setdefault(ts // (60 * 10**9), []).append(p)
    keys, prev, dps = sorted(bars), float(tr['price'][0]), []
    for k in keys: dps.append(float(bars[k][-1]) - prev); prev = float(bars[k][-1])
    sd = statistics.pstdev(dps)
    share = {k: 0.5 * (1 + math.erf(dp / sd / math.sqrt(2))) for k, dp in zip(keys, dps)}
    np.testing.assert_allclose(got, [share[ts // (60 * 10**9)] for ts in tr['ts'].tolist()], rtol=1e-12)


def test_vpin_properties():
    rng = np.random.default_rng(3)
    ts, size = np.arange(1000), rng.integers(1, 500, 1000).astype(float)
    # all buys: every bucket is all buy, VPIN 1; balanced shares: 0
    assert np.allclose(vpin(bucket_flow(ts, size, np.ones(1000), 1000)[1], 1000, 5)[4:], 1.0)
    assert np.allclose(vpin(bucket_flow(ts, size, np.full(1000, 0.5), 1000)[1], 1000, 5)[4:], 0.0)
    # splitting every print in two (same time, same share) changes no bucket
    share = rng.random(1000)
    a = bucket_flow(ts, size, share, 777)
    b = bucket_flow(np.repeat(ts, 2), np.repeat(size / 2, 2), np.repeat(share, 2), 777)
    assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])


def test_vpin_alerts_fire_once_per_upward_crossing_of_the_history_percentile():
    hist = np.linspace(0, 1, 1001)
    v = np.array([0.1, 0.995, 0.999, 0.2, 0.996, np.nan, 0.5])
    a = vpin_alerts('X', np.arange(7), v, hist, 99.0)
    level = np.percentile(hist, 99.0)
    above = [x > level for x in v]
    want = [i for i in range(7) if above[i] and not (i and above[i - 1])]
    assert a['ts'].tolist() == want == [1, 4]
    assert len(vpin_alerts('X', [1], [0.9], [], 99.0)) == 0


DAYS = ['2013-10-07', '2013-10-08', '2013-10-09', '2013-10-10', '2013-10-11']


@pytest.mark.parametrize('chunk', [997, 20_000])
def test_streaming_vpin_stage_equals_the_batch_functions_over_the_week(chunk):
    "VPINStage through run_replay in chunks: the alerts the batch functions give, day by day against earlier days."
    from velox.detect.toxicity import VPINStage
    from velox.feeds.replay import ArraySource, Replay
    from velox.market.signing import tick_rule
    from velox.market.vpin import VPINParams
    from velox.runtime.runners import run_replay
    cat, sess = Catalog(DATA), Session()
    tr = np.concatenate([cat.find('BAC', d, kinds=('trade',))[0].load() for d in DAYS])
    V = float(np.round(tr['size'][sess.contains(tr['ts'])].sum() / len(DAYS) / 50))
    params = VPINParams(bucket_volume=V, window=50, method='tick', percentile=95.0)
    got = run_replay(VPINStage(params), Replay([ArraySource('trade', 'BAC', tr)], chunk_rows=chunk)).outputs.get('alert')
    # batch: the tick rule over every print, then the session's prints into buckets, VPIN, alerts per day
    side = tick_rule(tr['price'])[0]
    keep = sess.contains(tr['ts']) & (tr['size'] > 0) & ~tr['suspicious']
    share = np.where(side > 0, 1.0, np.where(side < 0, 0.0, 0.5))[keep]
    t, buy = bucket_flow(tr['ts'][keep], tr['size'][keep], share, V)
    v = vpin(buy, V, 50)
    day = sess.bounds(t)[0]
    want = [vpin_alerts('BAC', t[day == d], v[day == d], v[day < d], 95.0) for d in np.unique(day)[1:]]
    want = np.concatenate(want)
    assert len(want) > 0
    assert got['ts'].tolist() == want['ts'].tolist()
    np.testing.assert_allclose(got['score'], want['score'], rtol=1e-9)
    assert got['id'].tolist() == want['id'].tolist() and set(got['kind'].tolist()) == {'vpin'}


def test_streaming_vpin_stage_by_lee_ready_equals_the_batch_functions():
    "The Lee-Ready stage behind the NBBO stage, replayed in chunks, against lee_ready + bucket_flow on two IBM days."
    from velox.detect.toxicity import VPINStage
    from velox.feeds.replay import Replay
    from velox.market.nbbo import NBBOStage
    from velox.market.signing import lee_ready
    from velox.market.vpin import VPINParams
    from velox.runtime.runners import run_replay
    from velox.stage import Chain
    cat, sess, days = Catalog(DATA), Session(), DAYS[:2]
    srcs = [s for d in days for s in cat.find('IBM', d)]
    tr = np.concatenate([s.load() for s in srcs if s.kind == 'trade'])
    nb = np.concatenate([consolidated_nbbo(s.load())[0] for s in srcs if s.kind == 'quote'])
    V = float(np.round(tr['size'][sess.contains(tr['ts'])].sum() / len(days) / 50))
    params = VPINParams(bucket_volume=V, window=20, method='lee_ready', percentile=90.0)
    got = run_replay(Chain(NBBOStage(), VPINStage(params)), Replay(srcs, chunk_rows=50_000)).outputs.get('alert')
    side = lee_ready(tr, nb)[0]
    keep = sess.contains(tr['ts']) & (tr['size'] > 0) & ~tr['suspicious']
    share = np.where(side > 0, 1.0, np.where(side < 0, 0.0, 0.5))[keep]
    t, buy = bucket_flow(tr['ts'][keep], tr['size'][keep], share, V)
    v = vpin(buy, V, 20)
    day = sess.bounds(t)[0]
    d2 = np.unique(day)[1]
    want = vpin_alerts('IBM', t[day == d2], v[day == d2], v[day < d2], 90.0)
    assert len(want) > 0
    assert got['ts'].tolist() == want['ts'].tolist()
    np.testing.assert_allclose(got['score'], want['score'], rtol=1e-9)
