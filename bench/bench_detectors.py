"""Throughput of the issue-5 detectors (Lee-Ready classification, dark-pool stage, accumulation stage) on a full
recorded day of IBM + BAC, against a pandas implementation of the same work in the same run; and, with --week, the
real week's alerts per kind per day and off-exchange share.

    python bench/bench_detectors.py [--day 2013-10-08] [--symbols IBM,BAC] [--repeat 3] [--start HH:MM --end HH:MM] [--week]
    python bench/bench_detectors.py --smoke     (IBM, 10:00-11:05 New York, one run per row: every check and the table)

Rows: `detectors` = DarkPoolStage + AccumulationStage over NBBO updates + trades (the events they consume; the NBBO
computed beforehand); `nbbo+detectors` = the same from raw quote rows (NBBO stage included); `replay` = the
in-process replay runner; `pandas` = merge_asof NBBO lookup, vectorised Lee-Ready, blocks, outside-NBBO and the
5-minute / 30-minute interval groupbys, on DataFrames already in memory. Events/s = input events / best-of-R seconds.

Before anything is timed, the three velox runners must give identical alerts, and velox must agree with the pandas
reference: the same outside-NBBO prints and blocks (dark + lit) as (ts, seq) sets, and every completed 30-minute
interval with the same volume and off-exchange share. Otherwise the script stops with the differences.
"""
from __future__ import annotations
import argparse
import gc
import os
import time
import numpy as np
import pandas as pd

from velox.core import clock_ns
from velox.detect.accumulation import AccumulationStage
from velox.detect.darkpool import DarkPoolParams, DarkPoolStage
from velox.events import empty, encode_conditions
from velox.feeds.recorded import Catalog
from velox.market.conditions import names_without
from velox.market.nbbo import NBBOStage
from velox.feeds.replay import ArraySource, Replay
from velox.stage import Chain
from velox.runtime.runners import run_frame, run_replay

KINDS = ('outside_nbbo', 'dark_print', 'block_print', 'dark_volume', 'accumulation', 'stealth_accum', 'distribution')
SMOKE = dict(symbols='IBM', start='10:00', end='11:05', repeat=1)  # --smoke: two whole 30-minute intervals of one symbol


def best(fn, repeat):
    out, ts = None, []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


NO_FLOW = encode_conditions(names_without('flow'))  # conditions whose prints carry no order flow (derivatively priced, ...)


def darkpool():
    "The dark-pool detector judged like the pandas reference: no tolerance (the product's default is 1 bp)."
    return DarkPoolStage(DarkPoolParams(tolerance_bps=0))


def detectors():
    return Chain(darkpool(), AccumulationStage())


def pandas_reference(nbbo: np.ndarray, trades: np.ndarray, tz='America/New_York'):
    """The same work with pandas, per symbol: NBBO lookup, Lee-Ready, blocks, outside-NBBO, interval aggregates.
    Returns {symbol: {'blocks', 'outside': (ts, seq) of those prints, 'i5', 'i30': interval aggregates by local start}}."""
    out = {}
    for sym in np.unique(trades['symbol']):
        q = pd.DataFrame({'ts': nbbo['ts'][nbbo['symbol'] == sym], 'bid': nbbo['bid'][nbbo['symbol'] == sym],
                          'ask': nbbo['ask'][nbbo['symbol'] == sym]})
        t = pd.DataFrame({k: trades[k][trades['symbol'] == sym] for k in ('ts', 'seq', 'price', 'size', 'venue', 'cond', 'suspicious')})
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
        res = out[str(sym)] = {'blocks': set(zip(m['ts'][block].tolist(), m['seq'][block].tolist())),
                               'outside': set(zip(m['ts'][outside].tolist(), m['seq'][outside].tolist()))}
        flow = sess & ((m['cond'].astype('u8') & NO_FLOW) == 0)  # prints that carry order flow (the condition table's)
        s = m[flow].assign(off=np.where(off[flow], m['size'][flow], 0.0),
                           buy=np.where(m['side'][flow] > 0, m['size'][flow], 0.0),
                           pv=m['price'][flow] / 1e8 * m['size'][flow])
        for minutes in (5, 30):
            g = s.groupby(local[flow].dt.floor(f'{minutes}min'))
            agg = g.agg(volume=('size', 'sum'), off=('off', 'sum'), buy=('buy', 'sum'), pv=('pv', 'sum'),
                        first=('price', 'first'), last=('price', 'last'))
            res[f'i{minutes}'] = agg
    return out


def print_keys(a, kinds) -> set:
    "(ts, trade seq) of the alerts of `kinds`."
    a = a[np.isin(a['kind'], kinds)]
    return set(zip(a['ts'].tolist(), a['trade_seq'].tolist()))


def differences(res, nb, trades) -> list[str]:
    "Where the velox detectors (`res`: run_frame's outputs) and the pandas reference disagree; [] if nowhere."
    al, acc, bad = res.outputs.get('alert', empty('alert')), res.outputs.get('accumulation', empty('accumulation')), []
    for sym, ref in pandas_reference(nb, trades).items():
        a = al[al['symbol'] == sym]
        for name, got, want in (('outside-NBBO prints', print_keys(a, ['outside_nbbo']), ref['outside']),
                                ('blocks (dark + lit)', print_keys(a, ['dark_print', 'block_print']), ref['blocks'])):
            if got != want: bad.append(f"{sym} {name}: velox {len(got):,}, pandas {len(want):,}; only velox "
                                       f"{sorted(got - want)[:3]}, only pandas {sorted(want - got)[:3]}")
        iv = acc[acc['symbol'] == sym]
        want = ref['i30']
        want = want[[k.value <= (iv['start'].max() if len(iv) else -1) for k in want.index]]  # the intervals velox completed
        got_start = iv['start'].tolist()
        if got_start != [k.value for k in want.index]:
            bad.append(f"{sym} 30-minute intervals: velox starts {got_start[:4]}, pandas {[k.value for k in want.index][:4]}")
        elif not (np.array_equal(iv['volume'], want['volume'].to_numpy())
                  and np.allclose(iv['off_share'], (want['off'] / want['volume']).to_numpy(), rtol=1e-12, atol=0)):
            bad.append(f"{sym} 30-minute intervals: volume or off-exchange share differ")
    return bad


def by_id(a): return a[np.argsort(a['id'], kind='stable')]


def day_rows(cat, symbols, day, repeat, start=None, end=None):
    lo = clock_ns(day, start, '--start') if start else -2**62
    hi = clock_ns(day, end, '--end') if end else 2**62
    cut = lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)]
    srcs = [ArraySource(s.kind, s.symbol, cut(s.load()), key=s.key) for sym in symbols for s in cat.find(sym, day)]
    quotes = sum(len(s.data) for s in srcs if s.kind == 'quote')
    trades = np.concatenate([s.data for s in srcs if s.kind == 'trade'])
    nb = run_frame(NBBOStage(), srcs)['nbbo']
    det_srcs = [ArraySource('nbbo', s, nb[nb['symbol'] == s]) for s in symbols] + [s for s in srcs if s.kind == 'trade']
    n_det, n_raw = len(nb) + len(trades), quotes + len(trades)
    # warm-up (first-call imports and caches) and the checks, untimed: the runners agree, and velox agrees with pandas
    ref = run_frame(detectors(), det_srcs, collect=('alert', 'accumulation'))
    al = ref.outputs.get('alert', empty('alert'))
    if not len(al) or 'accumulation' not in ref.outputs:
        raise AssertionError('no alert or no completed interval in this data: the checks would compare nothing')
    bad = differences(ref, nb, trades)
    for name, res in (('nbbo+detectors run_frame', run_frame(Chain(NBBOStage(), darkpool(), AccumulationStage()), srcs)),
                      ('nbbo+detectors run_replay', run_replay(Chain(NBBOStage(), darkpool(), AccumulationStage()), Replay(srcs)))):
        if not np.array_equal(by_id(res.outputs.get('alert', empty('alert'))), by_id(al)):
            bad.append(f"{name}: alerts differ from detectors run_frame on the same NBBO")
    if bad: raise AssertionError('results differ, the rates would not compare the same work:\n  ' + '\n  '.join(bad))
    print(f"every velox runner gives the same {len(al):,} alerts, and velox agrees with pandas on outside-NBBO prints, "
          f"blocks and {len(ref.outputs['accumulation']):,} completed 30-minute intervals")
    rows = []
    t, res = best(lambda: run_frame(detectors(), det_srcs), repeat)
    rows.append(('detectors (run_frame)', n_det, t))
    t, _ = best(lambda: run_frame(Chain(NBBOStage(), darkpool(), AccumulationStage()), srcs), repeat)
    rows.append(('nbbo+detectors (run_frame)', n_raw, t))
    t, _ = best(lambda: run_replay(Chain(NBBOStage(), darkpool(), AccumulationStage()), Replay(srcs)), max(1, repeat // 2))
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
        chain = Chain(NBBOStage(), darkpool(), AccumulationStage())
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
    ap.add_argument('--data', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data'))
    ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--symbols', default='IBM,BAC')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--start', help='only events from this New York time (HH:MM; default: the whole day)')
    ap.add_argument('--end', help='only events before this New York time (HH:MM)')
    ap.add_argument('--week', action='store_true', help='also print the week table of alerts per kind per day')
    ap.add_argument('--smoke', action='store_true', help='a small real input (IBM, 10:00-11:05), one run per row: every '
                    'check and the table (the test command runs this)')
    a = ap.parse_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    cat, symbols = Catalog(a.data), a.symbols.upper().split(',')
    print(f"velox bench detectors{' · smoke' if a.smoke else ''} · {','.join(symbols)} · {a.day}"
          + (f" · {a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else '') + f" · best of {a.repeat}")
    day_rows(cat, symbols, a.day, a.repeat, a.start, a.end)
    if a.week: week_table(cat, symbols)


if __name__ == '__main__':
    main()
