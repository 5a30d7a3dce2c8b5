"""Throughput of bar building (ticks -> 1m trade bars, 1m -> 5m/1h resampling, the streaming BarStage) on recorded
data, against pandas references run in the same process.

    python bench/bench_bars.py [--day 2013-10-08] [--symbols IBM,BAC] [--repeat R] [--start HH:MM --end HH:MM]
    python bench/bench_bars.py --smoke     (IBM, 09:25-10:05 New York, one run per row: every check and the table)

Prints one row per way of building bars: events, best-of-R seconds, events/s, ns/event and the ratio of events/s
to the matching pandas reference. Each velox result is checked equal to its reference first (same work).
"""
from __future__ import annotations
import argparse
import gc
import os
import platform
import time
import numpy as np
import pandas as pd

from velox.core import clock_ns
from velox.market.bars import ALL_PRINTS, BarStage, resample_bars, trade_bars
from velox.events import encode_conditions
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.runtime.runners import run_frame, run_replay

DEFAULT_DAY = '2013-10-08'
TZ = 'America/New_York'
SMOKE = dict(symbols='IBM', start='09:25', end='10:05', repeat=1)  # --smoke: the open and its first half hour, one symbol


# -- pandas references, written independently of velox.market.bars -----------------------------------------------------

def pandas_naive_bars(t: pd.DataFrame) -> pd.DataFrame:
    "Every print, recorded time: groupby symbol + local-minute floor, then first/max/min/last/sum."
    m = pd.to_datetime(t['ts'], utc=True).dt.tz_convert(TZ).dt.floor('1min')
    g = t.assign(m=m).groupby(['symbol', 'm'], sort=True)
    return g.agg(open=('price', 'first'), high=('price', 'max'), low=('price', 'min'), close=('price', 'last'),
                 volume=('size', 'sum'))


def pandas_lean_bars(t: pd.DataFrame) -> pd.DataFrame:
    "The default (Lean) print rule with pandas: auctions moved, sweeps and special prints out of prices."
    c = t['cond'].to_numpy().astype(np.int64)
    flag = lambda *f: (c & encode_conditions(f)) != 0
    local = pd.to_datetime(t['ts'], utc=True).dt.tz_convert(TZ)
    day = local.dt.normalize()
    open_, close_ = day + pd.Timedelta(hours=9, minutes=30), day + pd.Timedelta(hours=16)
    vol = ~flag('OfficialOpen', 'OfficialClose', 'Cross') & ~t['suspicious'].to_numpy()
    price = vol & ~(flag('IntermarketSweep', 'AveragePrice', 'DerivativelyPriced', 'StockOption', 'Seller', 'OddLot')
                    & ~flag('ExtendedHours'))
    opening, closing = flag('OpeningPrints') & ~flag('Cross'), flag('ClosingPrints') & ~flag('Cross')
    early = opening & (local >= open_) & (local < open_ + pd.Timedelta(seconds=60))
    late = opening & (local >= open_ + pd.Timedelta(seconds=60))
    moved = closing & (local >= close_) & (local < close_ + pd.Timedelta(seconds=300))
    eff = local.where(~early, open_).where(~moved, close_ - pd.Timedelta(nanoseconds=1))
    x = t.assign(eff=eff, rank=np.where(early, 0, np.where(moved, 2, 1)), m=eff.dt.floor('1min'),
                 v=t['size'].where(vol & ~late, 0.0), px=price & ~late)
    x = x[(vol & ~late) | x['px']].sort_values(['symbol', 'eff', 'rank', 'seq'], kind='stable')
    p = x[x['px']].groupby(['symbol', 'm']).agg(open=('price', 'first'), high=('price', 'max'), low=('price', 'min'),
                                                 close=('price', 'last'))
    return x.groupby(['symbol', 'm']).agg(volume=('v', 'sum')).join(p).fillna(0)


def pandas_resample(bars: pd.DataFrame, rule: str) -> pd.DataFrame:
    "Higher-timeframe bars from 1m bars with groupby + resample + agg."
    return (bars.reset_index().set_index('m').groupby('symbol').resample(rule)
            .agg({'open': 'first', 'high': 'max', 'low': 'min', 'close': 'last', 'volume': 'sum'}).dropna())


def same(mine: np.ndarray, ref: pd.DataFrame) -> bool:
    "velox bars equal to a reference frame indexed by (symbol, local time)?"
    ref = ref[ref['volume'] > 0]
    order = np.lexsort((mine['ts'], mine['symbol']))
    m = mine[order]
    keys = list(zip(m['symbol'].tolist(), m['ts'].tolist()))
    rkeys = [(s, int(t.value)) for s, t in ref.index]
    if keys != rkeys: return False
    return all(np.array_equal(m[f].astype('f8'), ref[f].to_numpy('f8')) for f in ('open', 'high', 'low', 'close', 'volume'))


def best_of(fn, repeat: int):
    best, out = float('inf'), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t0)
    return best, out


def table(rows: list[tuple]) -> str:
    "rows: (name, events, seconds, reference seconds or None)."
    head = f"{'run':<46} {'events':>10} {'seconds':>8} {'events/s':>13} {'ns/event':>9} {'vs pandas':>9}"
    out = [head, '-' * len(head)]
    for name, n, sec, ref in rows:
        ratio = f"{ref / sec:8.2f}x" if ref else ''
        out.append(f"{name:<46} {n:>10,} {sec:>8.3f} {n / sec:>13,.0f} {sec / n * 1e9:>9.0f} {ratio:>9}")
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_bars', description=__doc__.split('\n')[0])
    p.add_argument('--day', default=DEFAULT_DAY)
    p.add_argument('--symbols', default='IBM,BAC')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--start', help='only trades from this New York time (HH:MM; default: the whole day)')
    p.add_argument('--end', help='only trades before this New York time (HH:MM)')
    p.add_argument('--smoke', action='store_true', help='a small real input (IBM, 09:25-10:05), one run per row: every '
                   'check and the table (the test command runs this)')
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data')
    p.add_argument('--data-dir', default=os.path.normpath(here))
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    cat = Catalog(a.data_dir)
    symbols = [s.strip().upper() for s in a.symbols.split(',') if s.strip()]
    trades = np.concatenate([cat.find(s, a.day, kinds=('trade',))[0].load() for s in symbols])
    if a.start: trades = trades[trades['ts'] >= clock_ns(a.day, a.start, '--start')]
    if a.end: trades = trades[trades['ts'] < clock_ns(a.day, a.end, '--end')]
    n = len(trades)
    frame = pd.DataFrame({k: trades[k] for k in ('ts', 'symbol', 'price', 'size', 'cond', 'suspicious', 'seq')})
    import numba  # noqa: F401 -- only for the version line
    span = f" · {a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else ''
    print(f"velox bench bars{' · smoke' if a.smoke else ''} · {','.join(symbols)} · {a.day}{span} · best of {a.repeat}")
    print(f"machine: {platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
          f"numpy {np.__version__} · pandas {pd.__version__}\n")
    print(f"{n:,} trades\n")

    naive_ref, lean_ref = pandas_naive_bars(frame), pandas_lean_bars(frame)
    m1 = trade_bars(trades, '1m')
    checks = {'trade_bars ALL_PRINTS == pandas naive': same(trade_bars(trades, '1m', rule=ALL_PRINTS), naive_ref),
              'trade_bars LEAN == pandas LEAN rule': same(m1, lean_ref),
              'resample 1m->5m == pandas resample': same(resample_bars(m1, '5m'), pandas_resample(lean_ref, '5min')),
              'resample 1m->1h == pandas resample': same(resample_bars(m1, '1h'), pandas_resample(lean_ref, '1h'))}
    srcs = [ArraySource('trade', s, trades[trades['symbol'] == s]) for s in symbols]
    srt = lambda b: b[np.lexsort((b['ts'], b['symbol']))]
    checks['BarStage run_frame == trade_bars'] = np.array_equal(srt(run_frame(BarStage('1m'), srcs)['bar']), srt(m1))
    checks['BarStage run_replay == trade_bars'] = np.array_equal(srt(run_replay(BarStage('1m'), Replay(srcs))['bar']), srt(m1))
    if not len(m1): raise AssertionError('no bars in this data: the checks would compare nothing')
    bad = [k for k, ok in checks.items() if not ok]
    if bad: raise AssertionError(f"results differ, rates would not compare the same work: {bad}")
    print(f'every velox result equals its reference ({len(m1):,} 1m bars)\n')

    r = lambda fn: best_of(fn, a.repeat)[0]
    t_naive_ref, t_lean_ref = r(lambda: pandas_naive_bars(frame)), r(lambda: pandas_lean_bars(frame))
    nb = len(m1)
    t_rs5_ref, t_rs60_ref = r(lambda: pandas_resample(lean_ref, '5min')), r(lambda: pandas_resample(lean_ref, '1h'))
    rows = [('pandas naive 1m bars (groupby + agg)', n, t_naive_ref, None),
            ('velox trade_bars 1m, ALL_PRINTS', n, r(lambda: trade_bars(trades, '1m', rule=ALL_PRINTS)), t_naive_ref),
            ('pandas 1m bars, LEAN rule', n, t_lean_ref, None),
            ('velox trade_bars 1m, LEAN (default)', n, r(lambda: trade_bars(trades, '1m')), t_lean_ref),
            ('velox BarStage 1m, run_frame', n, r(lambda: run_frame(BarStage('1m'), srcs)), t_lean_ref),
            ('velox BarStage 1m, run_replay (64k chunks)', n, r(lambda: run_replay(BarStage('1m'), Replay(srcs))), t_lean_ref),
            ('velox BarStage 1m, run_replay (1k chunks)', n, r(lambda: run_replay(BarStage('1m'), Replay(srcs, chunk_rows=1000))), t_lean_ref),
            ('pandas resample 1m -> 5m (bars in)', nb, t_rs5_ref, None),
            ('velox resample_bars 1m -> 5m', nb, r(lambda: resample_bars(m1, '5m')), t_rs5_ref),
            ('pandas resample 1m -> 1h (bars in)', nb, t_rs60_ref, None),
            ('velox resample_bars 1m -> 1h', nb, r(lambda: resample_bars(m1, '1h')), t_rs60_ref)]
    print(table(rows))
    print(f"\nseconds = best of {a.repeat} wall times; vs pandas = events/s over the pandas row above it doing the same "
          "work. Not asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
