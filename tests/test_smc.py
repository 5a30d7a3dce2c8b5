"""Smart-money patterns (velox.detect.smc) on real bars against an independent whole-array reference written here.

The reference reads the rules from the smc notebook's prose and applies them with plain loops over the full bar
arrays (global indices, no rolling buffer, swings and gaps found up front), so it shares no code with the
incremental state machine. Bars: the recorded Lean 1-minute files and bars rebuilt from the ticks by velox.market.bars
(1m and 5m), IBM and BAC, every recorded day. Also: no look-ahead (appending bars never changes what was
emitted) and identical outputs through run_frame and run_replay in small chunks."""
from datetime import datetime, time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from velox.market.bars import resample_bars, trade_bars
from velox.core import NS
from velox.events import PRICE_SCALE
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.detect.smc import SMCStage, smc_patterns
from velox.runtime.runners import run_frame, run_replay

DATA = Path(__file__).resolve().parent.parent/'replay/data'
CAT = Catalog(DATA)
SYMBOLS = ('IBM', 'BAC')
PARAMS = [dict(), dict(left=1, right=1, ob_lookback=10), dict(left=3, right=0, eq_tol_bps=3.0, fvg_min_bps=2.0),
          dict(left=2, right=4, eq_tol=0.01, eq_tol_bps=0.0, fvg_min_bps=0.0), dict(session=None, fvg_min_bps=0.0)]


def regular_hours(ts_ns) -> bool:
    "Bar open time in New York 09:30 <= t < 16:00 (the default session), by the standard library."
    t = datetime.fromtimestamp(ts_ns / 1e9, ZoneInfo('America/New_York')).time()
    return dtime(9, 30) <= t < dtime(16, 0)


def reference(bars, tf_s, left=2, right=2, ob_lookback=50, fvg_min_bps=5.0, eq_tol=0.0, eq_tol_bps=1.0, session=True):
    "Patterns of one symbol's bars as [(ts, kind, low, high, start_ts, end_ts, ref_ts)], by the documented rules (session: falsy = every bar)."
    keep = [r for r in bars.tolist() if r[7] in (0, tf_s) and not r[9] and r[3] > 0 and r[4] > 0 and (not session or regular_hours(r[0]))]
    keep.sort(key=lambda r: r[0])
    rows, last = [], None
    for r in keep:
        if last is None or r[0] > last: rows.append(r); last = r[0]
    T = [r[0] for r in rows]; O = [r[2] for r in rows]; H = [r[3] for r in rows]; L = [r[4] for r in rows]; C = [r[5] for r in rows]
    n, tf = len(rows), tf_s * NS
    tol_abs = int(round(eq_tol * PRICE_SCALE))
    # swings, by the bar whose close confirms them
    swings = {}
    for i in range(left, n - right):
        if H[i] > max(H[i - left:i]) and all(H[i] >= H[j] for j in range(i + 1, i + right + 1)):
            swings.setdefault(i + right, []).append(('H', i))
        if L[i] < min(L[i - left:i]) and all(L[i] <= L[j] for j in range(i + 1, i + right + 1)):
            swings.setdefault(i + right, []).append(('L', i))
    out = []
    sh = sl = None  # [index, price, broken]
    trend, blocks, gaps = 0, [], []
    for k in range(n):
        end = T[k] + tf
        live = []
        for b in blocks:  # (dir, low, high, candle index)
            hit = L[k] <= b[2] if b[0] == 'bull' else H[k] >= b[1]
            if hit: out.append((end, 'OB_MITIGATED', b[1], b[2], T[b[3]], end, T[b[3]]))
            else: live.append(b)
        blocks, live = live, []
        for g in gaps:  # (dir, low, high, first index)
            hit = L[k] <= g[1] if g[0] == 'up' else H[k] >= g[2]
            if hit: out.append((end, 'FVG_FILLED', g[1], g[2], T[g[3]], end, T[g[3] + 1]))
            else: live.append(g)
        gaps = live
        if sh is not None and not sh[2] and C[k] > sh[1]:
            out.append((end, 'CHOCH_UP' if trend == -1 else 'BOS_UP', sh[1], C[k], T[sh[0]], end, T[sh[0]]))
            sh[2], trend = True, 1
            window = list(range(max(sh[0] + 1, k - ob_lookback), k))
            if window:
                lowest = min(L[j] for j in window)
                m = [j for j in window if L[j] == lowest][-1]
                downs = [j for j in window if j <= m and C[j] < O[j]]
                if downs:
                    j = downs[-1]
                    out.append((end, 'ORDER_BLOCK_BULL', L[j], H[j], T[j], T[j] + tf, T[j]))
                    blocks.append(('bull', L[j], H[j], j))
        if sl is not None and not sl[2] and C[k] < sl[1]:
            out.append((end, 'CHOCH_DOWN' if trend == 1 else 'BOS_DOWN', C[k], sl[1], T[sl[0]], end, T[sl[0]]))
            sl[2], trend = True, -1
            window = list(range(max(sl[0] + 1, k - ob_lookback), k))
            if window:
                highest = max(H[j] for j in window)
                m = [j for j in window if H[j] == highest][-1]
                ups = [j for j in window if j <= m and C[j] > O[j]]
                if ups:
                    j = ups[-1]
                    out.append((end, 'ORDER_BLOCK_BEAR', L[j], H[j], T[j], T[j] + tf, T[j]))
                    blocks.append(('bear', L[j], H[j], j))
        if k >= 2:
            need = max(1, int(C[k - 1] * fvg_min_bps / 1e4))
            if L[k] - H[k - 2] >= need:
                out.append((end, 'FVG_UP', H[k - 2], L[k], T[k - 2], end, T[k - 1])); gaps.append(('up', H[k - 2], L[k], k - 2))
            if L[k - 2] - H[k] >= need:
                out.append((end, 'FVG_DOWN', H[k], L[k - 2], T[k - 2], end, T[k - 1])); gaps.append(('down', H[k], L[k - 2], k - 2))
        for side, i in swings.get(k, []):
            p = H[i] if side == 'H' else L[i]
            out.append((end, 'SWING_HIGH' if side == 'H' else 'SWING_LOW', p, p, T[i], T[i] + tf, T[i]))
            prev = sh if side == 'H' else sl
            tol = max(tol_abs, int(p * eq_tol_bps / 1e4))
            if prev is not None and not prev[2] and abs(p - prev[1]) <= tol:
                out.append((end, 'EQUAL_HIGHS' if side == 'H' else 'EQUAL_LOWS', min(p, prev[1]), max(p, prev[1]),
                            T[prev[0]], T[i] + tf, T[prev[0]]))
            if side == 'H': sh = [i, p, False]
            else: sl = [i, p, False]
    return out


def as_rows(p):
    return [tuple(r) for r in p[['ts', 'kind', 'price_low', 'price_high', 'start_ts', 'end_ts', 'ref_ts']].tolist()]


def lean_bars(sym):
    return np.concatenate([s.load() for s in CAT.sources() if s.fmt == 'lean_minute' and s.kind == 'bar' and s.symbol == sym])


@pytest.fixture(scope='module')
def rebuilt():
    "Per symbol: 1m bars rebuilt from every recorded tick day, and 5m bars resampled from them."
    out = {}
    for sym in SYMBOLS:
        tr = np.concatenate([s.load() for s in CAT.sources() if s.fmt == 'lean_tick' and s.kind == 'trade' and s.symbol == sym])
        m1 = trade_bars(tr, '1m')
        out[sym] = {60: m1, 300: resample_bars(m1, '5m')}
    return out


@pytest.mark.parametrize('sym', SYMBOLS)
@pytest.mark.parametrize('params', PARAMS, ids=lambda d: ','.join(f'{k}={v}' for k, v in d.items()) or 'defaults')
def test_every_pattern_on_recorded_lean_minute_bars_equals_the_reference(sym, params):
    bars = lean_bars(sym)
    want = reference(bars, 60, **params)
    got = smc_patterns(bars, '1m', **params)
    assert as_rows(got) == want
    kinds = set(got['kind'].tolist())
    # the real week exercises every kind (with the defaults), so the comparison is not vacuous
    if not params: assert kinds == {'SWING_HIGH', 'SWING_LOW', 'BOS_UP', 'BOS_DOWN', 'CHOCH_UP', 'CHOCH_DOWN',
                                    'ORDER_BLOCK_BULL', 'ORDER_BLOCK_BEAR', 'OB_MITIGATED', 'FVG_UP', 'FVG_DOWN',
                                    'FVG_FILLED', 'EQUAL_HIGHS', 'EQUAL_LOWS'}, kinds
    assert (got['symbol'] == sym).all() and (got['tf'] == 60).all()
    assert len(set(got['id'].tolist())) == len(got)


@pytest.mark.slow
@pytest.mark.parametrize('sym', SYMBOLS)
@pytest.mark.parametrize('tf', [60, 300])
def test_every_pattern_on_bars_rebuilt_from_ticks_equals_the_reference(rebuilt, sym, tf):
    bars = rebuilt[sym][tf]
    for params in PARAMS[:2]:
        want = reference(bars, tf, **params)
        assert len(want) > 100
        assert as_rows(smc_patterns(bars, tf, **params)) == want


@pytest.mark.parametrize('sym', SYMBOLS)
def test_appending_future_bars_never_changes_a_pattern_already_emitted(sym):
    bars = lean_bars(sym)
    full = smc_patterns(bars, '1m')
    rng = np.random.default_rng(7)
    for cut in sorted(rng.choice(np.arange(1, len(bars)), 25, replace=False).tolist()):
        prefix = smc_patterns(bars[:cut], '1m')
        # what a prefix emits is exactly the start of what the whole stream emits, and known by the prefix's end
        assert prefix.tolist() == full[:len(prefix)].tolist()
        assert (prefix['ts'] <= bars['ts'][cut - 1] + 60 * NS).all()
        # and nothing the full run emitted later was known within the prefix
        assert (full['ts'][len(prefix):] > bars['ts'][cut - 1]).all()


def test_no_pattern_is_known_before_the_close_of_the_bars_it_spans():
    for sym in SYMBOLS:
        p = smc_patterns(lean_bars(sym), '1m')
        assert (p['ts'] >= p['end_ts']).all()
        assert (p['start_ts'] <= p['ref_ts']).all() and (p['ref_ts'] < p['ts']).all()
        assert (p['price_low'] <= p['price_high']).all()


@pytest.mark.parametrize('chunk', [1, 7, 500])
def test_run_replay_in_small_chunks_equals_run_frame_on_both_symbols_all_days(chunk):
    srcs = [s for s in CAT.sources() if s.fmt == 'lean_minute' and s.kind == 'bar' and s.symbol in SYMBOLS]
    a = run_frame(SMCStage('1m'), srcs)['pattern']
    b = run_replay(SMCStage('1m'), Replay(srcs, chunk_rows=chunk))['pattern']
    by_sym = lambda p: p[np.argsort(p['symbol'], kind='stable')]
    assert by_sym(a).tolist() == by_sym(b).tolist()
    assert {s: len(a[a['symbol'] == s]) for s in SYMBOLS} == {s: len(smc_patterns(lean_bars(s), '1m')) for s in SYMBOLS}


def test_streaming_bars_from_barstage_give_the_patterns_of_the_batch_bars():
    from velox.market.bars import BarStage
    from velox.stage import Chain
    day = sorted(s.day for s in CAT.sources() if s.fmt == 'lean_tick' and s.symbol == 'IBM')[1]
    tr = CAT.find('IBM', day, kinds=('trade',))[0].load()
    r = run_replay(Chain(BarStage('1m'), SMCStage('1m')), Replay([ArraySource('trade', 'IBM', tr)], chunk_rows=5000))
    want = smc_patterns(trade_bars(tr, '1m'), '1m')
    assert len(want) > 100 and r['pattern'].tolist() == want.tolist()
