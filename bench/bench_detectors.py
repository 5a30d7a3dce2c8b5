"""Throughput of the issue-5 detectors (Lee-Ready classification, dark-pool stage, accumulation stage) on a full
recorded day of IBM + BAC, against a pandas implementation of the same work in the same run; and, with --week, the
real week's alerts per kind per day and off-exchange share.

    python bench/bench_detectors.py [--day 2013-10-08] [--symbols IBM,BAC] [--repeat 3] [--week]

Rows: `detectors` = DarkPoolStage + AccumulationStage over NBBO updates + trades (the events they consume; the NBBO
computed beforehand); `nbbo+detectors` = the same from raw quote rows (NBBO stage included); `replay` = the
in-process replay runner; `pandas` = merge_asof NBBO lookup, vectorised Lee-Ready, blocks, outside-NBBO and the
5-minute / 30-minute interval groupbys, on DataFrames already in memory. Events/s = input events / best-of-R seconds.
"""
from __future__ import annotations
import argparse
import gc
import time
import numpy as np
import pandas as pd

from velox.detect.accumulation import AccumulationStage
from velox.detect.darkpool import DarkPoolStage
from velox.events import empty
from velox.feeds.recorded import Catalog
from velox.market.nbbo import NBBOStage
from velox.feeds.replay import ArraySource, Replay
from velox.stage import Chain
from velox.runtime.runners import run_frame, run_replay

KINDS = ('outside_nbbo', 'dark_print', 'block_print', 'dark_volume', 'accumulation', 'stealth_accum', 'distribution')


def best(fn, repeat):
    out, ts = None, []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


def detectors():
    return Chain(DarkPoolStage(), AccumulationStage())


def pandas_reference(nbbo: np.ndarray, trades: np.ndarray, tz='America/New_York'):
    "The same work with pandas, per symbol: NBBO lookup, Lee-Ready, blocks, outside-NBBO, interval aggregates."
    out = []
    for sym in np.unique(trades['symbol']):
        q = pd.DataFrame({'ts': nbbo['ts'][nbbo['symbol'] == sym], 'bid': nbbo['bid'][nbbo['symbol'] == sym],
                          'ask': nbbo['ask'][nbbo['symbol'] == sym]})
        t = pd.DataFrame({k: trades[k][trades['symbol'] == sym] for k in ('ts', 'price', 'size', 'venue', 'cond', 'suspicious')})
        m = pd.merge_asof(t, q, on='ts', direction='backward')
        mid2 = m['bid'] + m['ask']
        valid = (m['bid'] > 0) & (m['ask'] > 0) & (m['bid'] <= m['ask'])
        qr = np.where(valid, np.sign(2 * m['price'] - mid2), 0)
        d = np.sign(m['price'].diff().fillna(0))
        tick = d.replace(0, np.nan).ffill().fillna(0)
        m['side'] = np.where(qr != 0, qr, tick)
        local = pd.to_datetime(m['ts'], utc=True).dt.tz_convert(tz)
        hhmm = local.dt.hour * 60 + local.dt.minute
        sess = (hhmm >= 570) & (hhmm < 960)
        off = m['venue'].isin(['D', 'ADF', 'TRF', 'MW'])
        notional = m['price'] / 1e8 * m['size']
        block = ((m['size'] >= 10_000) | (notional >= 200_000)) & (m['size'] > 0) & sess
        outside = valid & sess & ((m['price'] > m['ask']) | (m['price'] < m['bid']))
        out.append((int(block.sum()), int(outside.sum())))
        s = m[sess].assign(off=np.where(off[sess], m['size'][sess], 0.0),
                           buy=np.where(m['side'][sess] > 0, m['size'][sess], 0.0),
                           pv=m['price'][sess] / 1e8 * m['size'][sess])
        for minutes in (5, 30):
            g = s.groupby(local[sess].dt.floor(f'{minutes}min'))
            agg = g.agg(volume=('size', 'sum'), off=('off', 'sum'), buy=('buy', 'sum'), pv=('pv', 'sum'),
                        first=('price', 'first'), last=('price', 'last'))
            out.append(len(agg))
    return out


def day_rows(cat, symbols, day, repeat):
    srcs = [ArraySource(s.kind, s.symbol, s.load(), key=s.key) for sym in symbols for s in cat.find(sym, day)]
    quotes = sum(len(s.data) for s in srcs if s.kind == 'quote')
    trades = np.concatenate([s.data for s in srcs if s.kind == 'trade'])
    nb = run_frame(NBBOStage(), srcs)['nbbo']
    det_srcs = [ArraySource('nbbo', s, nb[nb['symbol'] == s]) for s in symbols] + [s for s in srcs if s.kind == 'trade']
    n_det, n_raw = len(nb) + len(trades), quotes + len(trades)
    run_frame(detectors(), det_srcs)  # warm-up (numba-free, but first-call imports and caches)
    rows = []
    t, res = best(lambda: run_frame(detectors(), det_srcs), repeat)
    rows.append(('detectors (run_frame)', n_det, t))
    t, _ = best(lambda: run_frame(Chain(NBBOStage(), DarkPoolStage(), AccumulationStage()), srcs), repeat)
    rows.append(('nbbo+detectors (run_frame)', n_raw, t))
    t, _ = best(lambda: run_replay(Chain(NBBOStage(), DarkPoolStage(), AccumulationStage()), Replay(srcs)), max(1, repeat // 2))
    rows.append(('nbbo+detectors (run_replay, speed 0)', n_raw, t))
    t, _ = best(lambda: pandas_reference(nb, trades), repeat)
    rows.append(('pandas reference (same work)', n_det, t))
    ref_rate = rows[-1][1] / rows[-1][2]
    print(f"\nday {day}, symbols {','.join(symbols)}: {quotes:,} quote rows, {len(nb):,} NBBO updates, {len(trades):,} trades")
    print(f"{'runner':<40}{'events':>12}{'seconds':>10}{'events/s':>14}{'x pandas':>10}")
    for name, n, t in rows:
        print(f"{name:<40}{n:>12,}{t:>10.3f}{n / t:>14,.0f}{n / t / ref_rate:>10.1f}")
    al = res.outputs.get('alert', empty('alert'))
    print('alerts:', {k: int((al['kind'] == k).sum()) for k in KINDS})


def week_table(cat, symbols):
    days = sorted(cat.table().query("format == 'lean_tick' and symbol == @symbols[0]")['date'].unique())
    rows = []
    for sym in symbols:
        chain = Chain(NBBOStage(), DarkPoolStage(), AccumulationStage())
        for day in days:
            res = run_frame(chain, cat.find(sym, day), collect=('alert', 'accumulation'))
            al = res.outputs.get('alert', empty('alert'))
            tr = cat.find(sym, day, kinds=('trade',))[0].load()
            regular = chain.stages[1].session.contains(tr['ts'])
            v = tr['size'] * regular
            rows.append({'symbol': sym, 'day': day, **{k: int((al['kind'] == k).sum()) for k in KINDS},
                         'off_share_regular': round(float(v[tr['venue'] == 'D'].sum() / v.sum()), 4),
                         'off_share_all': round(float(tr['size'][tr['venue'] == 'D'].sum() / tr['size'].sum()), 4)})
    df = pd.DataFrame(rows)
    print('\nalerts per kind per day (one stage per symbol carried across the week: baselines from earlier days only)')
    print(df.to_string(index=False))
    print('\ntotals per kind:', df[list(KINDS)].sum().to_dict())
    return df


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='replay/data')
    ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--symbols', default='IBM,BAC')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--week', action='store_true', help='also print the week table of alerts per kind per day')
    a = ap.parse_args(argv)
    cat, symbols = Catalog(a.data), a.symbols.upper().split(',')
    day_rows(cat, symbols, a.day, a.repeat)
    if a.week: week_table(cat, symbols)


if __name__ == '__main__':
    main()
