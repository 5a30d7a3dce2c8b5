"""Bars rebuilt from the recorded ticks against the recorded Lean minute bars, an independent pandas reference
of the same print rule, the 1m -> 5m/15m/1h hierarchy, and batching invariance of the streaming BarStage.

Run with `-s` to see the match-rate tables. Expectations come from the Lean files and from pandas code written
here, never from velox.market.bars itself (except where two velox paths must agree: hierarchy, batching)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velox.market.bars import ALL_PRINTS, BarStage, bar_quotes, quote_bars, resample_bars, trade_bars
from velox.events import encode_conditions
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource, Replay
from velox.runtime.runners import run_frame, run_replay

DATA = Path(__file__).resolve().parent.parent/'replay/data'
CAT = Catalog(DATA)


def _pairs():
    "(symbol, day) with tick trades, tick quotes and Lean minute trade and quote bars recorded."
    ticks = {(s.symbol, s.day) for s in CAT.sources() if s.fmt == 'lean_tick' and s.kind == 'trade'}
    bars = {(s.symbol, s.day) for s in CAT.sources() if s.fmt == 'lean_minute' and s.kind == 'bar'}
    return sorted(ticks & bars)


PAIRS = _pairs()
SYMBOLS = sorted({s for s, _ in PAIRS})
FIELDS = ('open', 'high', 'low', 'close', 'volume')
QFIELDS = ('bid_open', 'bid_high', 'bid_low', 'bid_close', 'bid_size', 'ask_open', 'ask_high', 'ask_low', 'ask_close', 'ask_size')


def load(sym, day, kind, fmt='lean_tick'):
    return CAT.find(sym, day, kinds=(kind,), fmt=fmt)[0].load()


@pytest.fixture(scope='module')
def days():
    "Per (symbol, day): trades, NBBO, Lean trade bars, Lean quote bars."
    out = {}
    for sym, day in PAIRS:
        q = load(sym, day, 'quote')
        nb, _ = consolidated_nbbo(bar_quotes(q))
        out[sym, day] = dict(trade=load(sym, day, 'trade'), nbbo=nb, nbbo_all=consolidated_nbbo(q)[0], bar=load(sym, day, 'bar', 'lean_minute'),
                             quote_bar=load(sym, day, 'quote_bar', 'lean_minute'))
    return out


def match(mine: np.ndarray, lean: np.ndarray, fields) -> dict:
    "Per field: Lean bars whose value we reproduce exactly; plus bars only one side has."
    a = pd.DataFrame({f: mine[f] for f in ('ts',) + fields}).set_index('ts')
    b = pd.DataFrame({f: lean[f] for f in ('ts',) + fields}).set_index('ts')
    j = b.join(a.add_suffix('_mine'), how='left')
    out = {f: int((j[f] == j[f + '_mine']).sum()) for f in fields}
    out.update(n=len(b), missing=int(j[fields[0] + '_mine'].isna().sum()), extra=len(a.index.difference(b.index)))
    return out


def table(rows: dict, fields) -> str:
    head = f"{'':<22}{'bars':>6} " + ' '.join(f"{f[:9]:>9}" for f in fields) + f"{'missing':>9}{'extra':>7}"
    lines = [head]
    for name, r in rows.items():
        lines.append(f"{name:<22}{r['n']:>6} " + ' '.join(f"{100 * r[f] / r['n']:>8.2f}%" for f in fields)
                     + f"{r['missing']:>9}{r['extra']:>7}")
    return '\n'.join(lines)


def totals(days, fn, kind, fields):
    tot = {}
    for (sym, _day), d in days.items():
        r = match(fn(d), d[kind], fields)
        t = tot.setdefault(sym, dict.fromkeys(r, 0))
        for k, v in r.items(): t[k] += v
    return tot


def test_trade_bars_match_recorded_lean_minute_bars(days):
    "Default rule: O, C and volume on every Lean bar; H and L on all but one bar each (explained in nbs/market/01_bars)."
    naive = totals(days, lambda d: trade_bars(d['trade'], '1m', rule=ALL_PRINTS), 'bar', FIELDS)
    got = totals(days, lambda d: trade_bars(d['trade'], '1m'), 'bar', FIELDS)
    print('\ntrade bars, every print (ALL_PRINTS):\n' + table(naive, FIELDS))
    print('trade bars, LEAN rule (default):\n' + table(got, FIELDS))
    for sym, r in got.items():
        assert r['missing'] == 0 and r['extra'] == 0
        for f in ('open', 'close', 'volume'): assert r[f] == r['n'], (sym, f)
        # 1 bar of 5,104 misses high (IBM 10-11 15:49, an average-price print Lean kept) and 1 misses low
        # (BAC 10-09 09:40: Lean's low is a price no tick of that minute has): >= 99.9 %, not 100 %.
        for f in ('high', 'low'): assert r[f] >= 0.999 * r['n'], (sym, f)
    assert sum(r['n'] - r['high'] for r in got.values()) <= 1 and sum(r['n'] - r['low'] for r in got.values()) <= 1


def test_quote_bars_match_recorded_lean_quote_bars(days):
    "IBM: every field of every bar. BAC: 4 bars after the close where Lean un-crosses the NBBO (nbs/market/01_bars)."
    every = totals(days, lambda d: quote_bars(d['nbbo_all'], '1m'), 'quote_bar', QFIELDS)
    got = totals(days, lambda d: quote_bars(d['nbbo'], '1m'), 'quote_bar', QFIELDS)
    print('\nquote bars, NBBO from every quote row:\n' + table(every, QFIELDS))
    print('quote bars, NBBO from bar_quotes (no suspicious, no closing-quote rows):\n' + table(got, QFIELDS))
    for sym, r in every.items():
        for f in QFIELDS: assert r[f] >= 0.998 * r['n'], (sym, f)
    for sym, r in got.items():
        assert r['missing'] == 0 and r['extra'] == 0, sym
        for f in QFIELDS: assert r['n'] - r[f] <= 4, (sym, f, r['n'] - r[f])
    assert sum(r['n'] - r[f] for r in got.values() for f in QFIELDS) <= 10


# -- an independent pandas reference of the LEAN rule ----------------------------------------------------------

def pandas_lean_bars(tr: np.ndarray, minutes: int) -> pd.DataFrame:
    "The default rule written with pandas: local-clock buckets, auctions moved, sweeps etc. out of prices."
    t = pd.DataFrame({k: tr[k] for k in ('ts', 'price', 'size', 'cond', 'suspicious', 'seq')})
    c = t['cond'].to_numpy().astype(np.int64)
    flag = lambda *f: (c & encode_conditions(f)) != 0
    local = pd.to_datetime(t['ts'], utc=True).dt.tz_convert('America/New_York')
    day = local.dt.normalize()
    open_, close_ = day + pd.Timedelta(hours=9, minutes=30), day + pd.Timedelta(hours=16)
    vol = ~flag('OfficialOpen', 'OfficialClose', 'Cross') & ~t['suspicious'].to_numpy()
    price = vol & ~(flag('IntermarketSweep', 'AveragePrice', 'DerivativelyPriced', 'StockOption', 'Seller', 'OddLot') & ~flag('ExtendedHours'))
    opening, closing = flag('OpeningPrints') & ~flag('Cross'), flag('ClosingPrints') & ~flag('Cross')
    early = opening & (local >= open_) & (local < open_ + pd.Timedelta(seconds=60))
    late = opening & (local >= open_ + pd.Timedelta(seconds=60))
    moved = closing & (local >= close_) & (local < close_ + pd.Timedelta(seconds=300))
    eff = local.where(~early, open_).where(~moved, close_ - pd.Timedelta(nanoseconds=1))
    t['rank'] = np.where(early, 0, np.where(moved, 2, 1))
    t['bucket'] = eff.dt.floor(f'{minutes}min')
    t['eff'] = eff
    t['vol'], t['px'] = vol & ~late, price & ~late
    t = t[t['vol'] | t['px']].sort_values(['eff', 'rank', 'seq'], kind='stable')
    p = t[t['px']].groupby('bucket').agg(open=('price', 'first'), high=('price', 'max'), low=('price', 'min'), close=('price', 'last'))
    v = t.assign(v=t['size'].where(t['vol'], 0.0)).groupby('bucket').agg(volume=('v', 'sum'))
    out = v.join(p).fillna(0)
    out.index = out.index.tz_convert('UTC').tz_localize(None).astype('int64')
    return out


@pytest.mark.parametrize('tf', ['1m', '5m', '15m', '1h'])
def test_trade_bars_equal_pandas_reference_of_the_rule(days, tf):
    minutes = {'1m': 1, '5m': 5, '15m': 15, '1h': 60}[tf]
    for (sym, day), d in days.items():
        mine = trade_bars(d['trade'], tf)
        ref = pandas_lean_bars(d['trade'], minutes)
        assert mine['ts'].tolist() == ref.index.tolist(), (sym, day)
        for f in FIELDS: assert mine[f].tolist() == ref[f].astype(mine[f].dtype).tolist(), (sym, day, f)


# -- hierarchy and batching ------------------------------------------------------------------------------------

def test_higher_timeframes_from_1m_equal_bars_from_ticks_on_every_day(days):
    for (sym, day), d in days.items():
        m1, q1 = trade_bars(d['trade'], '1m'), quote_bars(d['nbbo'], '1m')
        for tf in ('5m', '15m', '1h'):
            assert np.array_equal(resample_bars(m1, tf), trade_bars(d['trade'], tf)), (sym, day, tf)
            assert np.array_equal(resample_bars(resample_bars(m1, '5m'), tf), trade_bars(d['trade'], tf)), (sym, day, tf)
            assert np.array_equal(resample_bars(q1, tf), quote_bars(d['nbbo'], tf)), (sym, day, tf)


def _sorted(b):
    return b[np.lexsort((b['ts'], b['symbol']))]


def test_bar_stage_same_bars_whatever_the_batching(days):
    "One real day of every symbol: one window, replay chunks, and the auction edges one event at a time."
    day = PAIRS[0][1]
    data = {k: np.concatenate([days[s, day][k] for s in SYMBOLS]) for k in ('trade', 'nbbo')}
    want_b, want_q = _sorted(trade_bars(data['trade'], '1m')), _sorted(quote_bars(data['nbbo'], '1m'))
    srcs = [ArraySource(k, s, days[s, day][k]) for k in ('trade', 'nbbo') for s in SYMBOLS]
    for run in (lambda: run_frame(BarStage('1m', quotes=True), srcs),
                lambda: run_replay(BarStage('1m', quotes=True), Replay(srcs, chunk_rows=997))):
        r = run()
        assert np.array_equal(_sorted(r['bar']), want_b)
        assert np.array_equal(_sorted(r['quote_bar']), want_q)
    # one event at a time around the open and the close (where the auction holds matter), 5m bars
    sym = SYMBOLS[0]
    d = days[sym, day]
    t0 = int(d['trade']['ts'][0]) // 86_400_000_000_000 * 86_400_000_000_000
    for lo, hi in ((13, 14), (19.9, 20.1)):  # UTC hours: 09:00-10:00 and 15:54-16:06 New York (EDT)
        cut = lambda b, lo=lo, hi=hi: b[(b['ts'] >= t0 + int(lo * 3600e9)) & (b['ts'] < t0 + int(hi * 3600e9))]
        tr, nb = cut(d['trade']), cut(d['nbbo'])
        src = [ArraySource('trade', sym, tr), ArraySource('nbbo', sym, nb)]
        r = run_replay(BarStage('5m', quotes=True), Replay(src, chunk_rows=1))
        assert np.array_equal(r['bar'], trade_bars(tr, '5m'))
        assert np.array_equal(r['quote_bar'], quote_bars(nb, '5m'))
