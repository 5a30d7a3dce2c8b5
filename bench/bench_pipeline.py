"""Throughput of the detect pipeline (replay -> NBBO -> outside-NBBO, then the whole dark-pool detect stage) on
recorded data, against references run in the same process.

    python bench/bench_pipeline.py [--days N] [--symbols IBM,BAC] [--repeat R] [--start HH:MM --end HH:MM]
    python bench/bench_pipeline.py --smoke      (IBM, 10:00-10:30, one run per row: every check and the table, in seconds)
    velox bench pipeline            (same defaults)

Prints one row per way of running a job: events, best-of-R seconds, events/s, ns/event and the ratio of events/s to
the job's reference run in this process. Two jobs, each compared like with like:
- NBBO -> outside-NBBO (`outside_stage`), against an independent pandas implementation of the same job;
- the product's detect stage (`detect_stage({'tolerance_bps': 0})`, the reference's tolerance: NBBO -> dark-pool, every alert kind it emits), against its own
  notebook runner (`run_frame`).
Nothing here is asserted except that every runner finds its reference's alerts (so the rates compare the same
work, and stop with the differences otherwise); see bench/README.md.
"""
from __future__ import annotations
import argparse
import gc
import os
import platform
import shutil
import tempfile
import time
import numpy as np
import pandas as pd

from velox.core import clock_ns
from velox.detect.outside_nbbo import OutsideNBBO
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.market.nbbo import NBBOStage
from velox.runtime.runners import run_frame, run_replay
from velox.runtime.stages import publish_replay, DETECT_INPUTS, DETECT_OUTPUTS
from velox.stage import Chain

DEFAULT_DAY = '2013-10-08'
TZ, OPEN_NS, CLOSE_NS = 'America/New_York', (9 * 3600 + 30 * 60) * 10**9, 16 * 3600 * 10**9
SMOKE = dict(symbols='IBM', start='10:00', end='10:30', repeat=1)  # --smoke: half an hour of one symbol-day


def outside_stage():
    "NBBO -> outside-NBBO alone: the job the pandas reference does (tolerance 0, regular hours)."
    return Chain(NBBOStage(), OutsideNBBO(tolerance_bps=0))

# -- data --------------------------------------------------------------------------------------------------------

def pick_days(cat:Catalog, symbols:list[str], n:int, day:str) -> list[str]:
    "`day` alone when n == 1, else the first n days recorded (as tick quotes and trades) for every symbol."
    if n == 1: return [day]
    have = [{s.day for s in cat.sources() if s.fmt == 'lean_tick' and s.symbol == sym} for sym in symbols]
    days = sorted(set.intersection(*have))
    if n > len(days): raise SystemExit(f"--days {n}: only {len(days)} days recorded for {','.join(symbols)}: {', '.join(days)}")
    return days[:n]

def load_arrays(cat:Catalog, symbols:list[str], days:list[str], start:str|None=None, end:str|None=None) -> list[ArraySource]:
    """Parse every source once (rows of each day from `start` to `end`, New York time, when given); the runs below
    replay these in-memory copies, so file parsing is never timed."""
    def cut(b, d):
        lo = clock_ns(d, start, '--start') if start else None
        hi = clock_ns(d, end, '--end') if end else None
        keep = np.ones(len(b), bool)
        if lo is not None: keep &= b['ts'] >= lo
        if hi is not None: keep &= b['ts'] < hi
        return b if keep.all() else b[keep]
    return [ArraySource(s.kind, s.symbol, cut(s.load(), d), key=s.key)
            for sym in symbols for d in days for s in cat.find(sym, d)]

def to_frames(srcs:list[ArraySource]) -> tuple[pd.DataFrame, pd.DataFrame]:
    "The quote and trade arrays as DataFrames (what a pandas user would have after read_csv)."
    def frame(kind, cols):
        return pd.concat([pd.DataFrame({c: s.data[c] for c in cols}) for s in srcs if s.kind == kind], ignore_index=True)
    return (frame('quote', ('ts', 'symbol', 'bid', 'bid_size', 'ask', 'ask_size')),
            frame('trade', ('ts', 'symbol', 'price', 'size', 'seq')))

# -- the pandas reference: the same job, written independently --------------------------------------------------

def product_stage():
    "The product's detect stage judged like the pandas reference: no tolerance (the product's default is 1 bp)."
    return detect_stage({'tolerance_bps': 0})


def pandas_outside_nbbo(quotes:pd.DataFrame, trades:pd.DataFrame) -> pd.DataFrame:
    "Trades in regular hours printed outside the prevailing two-sided, uncrossed NBBO (tolerance 0)."
    # One-sided rows: a row sets the side whose price or size is non-zero; the NBBO is the latest bid + latest ask.
    is_bid = (quotes['bid'] != 0) | (quotes['bid_size'] != 0)
    is_ask = (quotes['ask'] != 0) | (quotes['ask_size'] != 0)
    nb = pd.DataFrame({'ts': quotes['ts'], 'symbol': quotes['symbol'],
                       'bid': quotes['bid'].where(is_bid), 'ask': quotes['ask'].where(is_ask)})
    nb[['bid', 'ask']] = nb.groupby('symbol', sort=False)[['bid', 'ask']].ffill()
    # The state after the last row at a timestamp is what trades at that timestamp see (a bid row + ask row at one ts
    # form one update; quotes come before trades at equal ts).
    nb = nb.drop_duplicates(['symbol', 'ts'], keep='last').sort_values('ts', kind='stable')
    tr = trades.sort_values('ts', kind='stable')
    m = pd.merge_asof(tr, nb, on='ts', by='symbol', direction='backward', allow_exact_matches=True)
    bid, ask, px = m['bid'], m['ask'], m['price']  # float64 holds these int64 prices exactly (< 2**53)
    usable = (bid > 0) & (ask > 0) & (bid <= ask)  # NaN (no quote yet) compares False
    local = pd.to_datetime(m['ts'], utc=True).dt.tz_convert(TZ).dt.tz_localize(None).astype('int64')
    tod = local % (86400 * 10**9)
    hit = usable & ((px > ask) | (px < bid)) & (tod >= OPEN_NS) & (tod < CLOSE_NS)
    return m.loc[hit, ['symbol', 'ts', 'seq', 'price', 'bid', 'ask']]

def alert_keys(a) -> set:
    "(symbol, ts, trade seq) of each alert, from a velox alert batch or the reference frame."
    if isinstance(a, pd.DataFrame): return set(zip(a['symbol'].tolist(), a['ts'].tolist(), a['seq'].tolist()))
    if a is None: return set()
    return set(zip(a['symbol'].tolist(), a['ts'].tolist(), a['trade_seq'].tolist()))

def kind_keys(a) -> set:
    "(symbol, kind, ts, trade seq) of each alert of a velox alert batch: every kind the stage emits."
    if a is None: return set()
    return set(zip(a['symbol'].tolist(), a['kind'].tolist(), a['ts'].tolist(), a['trade_seq'].tolist()))

def differ(name:str, got:set, want:set, ref:str) -> str|None:
    "None if equal, else a line naming the first differences."
    if got == want: return None
    return (f"{name}: {len(got):,} alerts vs {ref} {len(want):,}; "
            f"only velox {sorted(got - want)[:5]}, only {ref} {sorted(want - got)[:5]}")

# -- the velox runners (`stage`: a factory of a fresh stage) ------------------------------------------------------

def velox_frame(srcs, stage=outside_stage):
    return run_frame(stage(), srcs, collect=('alert',)).outputs.get('alert')

def velox_replay(srcs, stage=outside_stage):
    return run_replay(stage(), Replay(srcs), collect=('alert',)).outputs.get('alert')

def velox_replay_sinks(srcs, store, stage=outside_stage):
    from velox.infra.sinks import StoreSink, HotSink
    from velox.infra.hot import MemoryHot
    sinks = [StoreSink(store, kinds=('trade', 'alert')), HotSink(MemoryHot())]
    return run_replay(stage(), Replay(srcs), sinks=sinks, collect=('alert',)).outputs.get('alert')

def velox_bus(srcs, split:dict|None=None, stage=outside_stage):
    "publish_replay into a MemoryBus, then one Worker consumes to the end-of-stream markers; `split` gets the two times."
    from velox.infra.bus import MemoryBus
    from velox.runtime.worker import RunOptions, Worker, WorkerSettings
    bus = MemoryBus()
    t0 = time.perf_counter()
    publish_replay(bus, Replay(srcs))
    t1 = time.perf_counter()
    w = Worker(stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, 'bench', WorkerSettings(poll_ms=5, collect=('alert',)))
    w.run(RunOptions(until_end=True, idle_timeout_s=0.01))  # ends at the partitions' end markers, no idle wait
    if split is not None: split.update(publish=t1 - t0, worker=time.perf_counter() - t1)
    return w.collected.result().get('alert')

def best_of(fn, repeat:int):
    "Best wall time of `repeat` calls, and the last call's result."
    best, out = float('inf'), None
    for _ in range(repeat):
        gc.collect()  # start each run with no garbage from the last one
        t0 = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t0)
    return best, out

# -- report ------------------------------------------------------------------------------------------------------

def machine() -> str:
    import numba
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · numba {numba.__version__} · pandas {pd.__version__}")

def table(rows:list[tuple]) -> str:
    "rows: (name, events, seconds, reference seconds or None); ratio = events/s over the reference's events/s."
    head = f"{'run':<52} {'events':>11} {'seconds':>9} {'events/s':>13} {'ns/event':>9} {'vs ref':>8}"
    out = [head, '-' * len(head)]
    for name, n, sec, ref in rows:
        if n is None: out.append(name); continue  # a section heading
        rate = n / sec if sec else float('nan')
        ratio = f"{ref / sec:7.2f}x" if ref else ''
        out.append(f"{name:<52} {n:>11,} {sec:>9.3f} {rate:>13,.0f} {sec / n * 1e9:>9.0f} {ratio:>8}")
    return '\n'.join(out)

def check(srcs, quotes, trades, store) -> dict:
    """Every runner against its reference, untimed (this also warms up imports, numba and chDB). Stops with the
    differences if any runner differs, or if the reference finds no alert (a check of nothing compares nothing)."""
    pandas_keys = alert_keys(pandas_outside_nbbo(quotes, trades))
    if not pandas_keys: raise AssertionError('the pandas reference finds no alert in this data: pick a longer window')
    bad = [differ(name, alert_keys(fn()), pandas_keys, 'pandas') for name, fn in outside_runners(srcs, store)]
    detect_ref = velox_frame(srcs, product_stage)
    frame_keys = kind_keys(detect_ref)
    bad.append(differ('detect_stage run_frame, its outside_nbbo alerts', alert_keys(detect_ref[detect_ref['kind'] == 'outside_nbbo']),
                      pandas_keys, 'pandas'))
    bad += [differ(name, kind_keys(fn()), frame_keys, 'run_frame') for name, fn in detect_runners(srcs)[1:]]
    bad = [b for b in bad if b]
    kinds = dict(zip(*[x.tolist() for x in np.unique(detect_ref['kind'], return_counts=True)]))
    print(f"alerts: outside-NBBO {len(pandas_keys):,} (pandas reference); detect_stage {len(frame_keys):,} (run_frame: "
          + ', '.join(f"{k} {v:,}" for k, v in kinds.items()) + ')' + ('; every velox runner agrees' if not bad else ''))
    if bad: raise AssertionError('alert sets differ, the rates would not compare the same work:\n  ' + '\n  '.join(bad))
    return kinds

def outside_runners(srcs, store):
    return [('velox run_frame (notebook runner)', lambda: velox_frame(srcs)),
            ('velox run_replay (in-process replay)', lambda: velox_replay(srcs)),
            ('velox run_replay + chDB StoreSink + HotSink', lambda: velox_replay_sinks(srcs, store)),
            ('velox bus: publish_replay + Worker', lambda: velox_bus(srcs))]

def detect_runners(srcs):
    return [('run_frame (notebook runner): reference', lambda: velox_frame(srcs, product_stage)),
            ('run_replay (in-process replay)', lambda: velox_replay(srcs, product_stage)),
            ('bus: publish_replay + Worker', lambda: velox_bus(srcs, stage=product_stage))]

def bus_rows(srcs, n:int, repeat:int, ref:float|None, name:str, stage) -> list:
    "The bus row (best of `repeat`) and its two parts from the best run."
    split, best = {}, None
    for _ in range(repeat):
        gc.collect()
        s = {}; t0 = time.perf_counter(); velox_bus(srcs, s, stage); t = time.perf_counter() - t0
        if best is None or t < best: best, split = t, s
    return [(name, n, best, ref), ('  of which publish_replay', n, split['publish'], ref),
            ('  of which Worker to end of stream', n, split['worker'], ref)]

def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_pipeline', description=__doc__.split('\n')[0])
    p.add_argument('--days', type=int, default=1, help='1 = --day only; N > 1 = the first N recorded days (5 = 2013-10-07..11)')
    p.add_argument('--day', default=DEFAULT_DAY, help=f'the day when --days 1 (default {DEFAULT_DAY})')
    p.add_argument('--symbols', default='IBM,BAC', help='comma-separated symbols (default IBM,BAC)')
    p.add_argument('--repeat', type=int, default=3, help='best of R timed runs per row (default 3)')
    p.add_argument('--start', help='only events from this New York time of each day (HH:MM; default: the whole day)')
    p.add_argument('--end', help='only events before this New York time of each day (HH:MM)')
    p.add_argument('--smoke', action='store_true', help="a small real input (IBM, 10:00-10:30), one run per row: every "
                   "check and the table, in seconds (the test command runs this)")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data')
    p.add_argument('--data-dir', default=os.path.normpath(here), help='recorded data root (default: replay/data here)')
    a, _ = p.parse_known_args(argv)  # run_path'd by `velox bench`, sys.argv is the CLI's: ignore what is not ours
    if a.smoke: vars(a).update(SMOKE)
    symbols = [s.strip().upper() for s in a.symbols.split(',') if s.strip()]
    cat = Catalog(a.data_dir)
    days = pick_days(cat, symbols, a.days, a.day)
    span = f" · {a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else ''

    print(f"velox bench pipeline{' · smoke' if a.smoke else ''} · {','.join(symbols)} · {', '.join(days)}{span} · best of {a.repeat}")
    print(f"machine: {machine()}\n")

    t0 = time.perf_counter(); srcs = load_arrays(cat, symbols, days, a.start, a.end); t_load = time.perf_counter() - t0
    n = sum(len(s.data) for s in srcs)
    t0 = time.perf_counter(); quotes, trades = to_frames(srcs); t_frames = time.perf_counter() - t0
    n_q, n_t = len(quotes), len(trades)
    print(f"{n:,} events: {n_q:,} quotes, {n_t:,} trades in {len(srcs)} sources\n")

    store_dir = tempfile.mkdtemp(prefix='velox-bench-')
    from velox.infra.stores import Store
    store = Store(f"chdb://{os.path.abspath(store_dir)}/chdb").migrate()
    try:
        kinds = check(srcs, quotes, trades, store)
        rows = [('load: parse zip CSV -> arrays (once)', n, t_load, None),
                ('load: arrays -> DataFrames (pandas reference only)', n, t_frames, None),
                ('NBBO -> outside-NBBO (vs the pandas reference):', None, None, None)]
        t_ref, _ = best_of(lambda: pandas_outside_nbbo(quotes, trades), a.repeat)
        rows.append(('pandas reference (ffill + merge_asof)', n, t_ref, t_ref))
        runners = outside_runners(srcs, store)
        for name, fn in runners[:3]:
            rows.append((name, n, best_of(fn, a.repeat)[0], t_ref))
        rows += bus_rows(srcs, n, a.repeat, t_ref, runners[3][0], outside_stage)
        rows.append((f"detect_stage, all {len(kinds)} kinds (vs its run_frame):", None, None, None))
        det = detect_runners(srcs)
        t_det, _ = best_of(det[0][1], a.repeat)
        rows.append(('velox ' + det[0][0], n, t_det, t_det))
        rows.append(('velox ' + det[1][0], n, best_of(det[1][1], a.repeat)[0], t_det))
        rows += bus_rows(srcs, n, a.repeat, t_det, 'velox ' + det[2][0], product_stage)
        print()
        print(table(rows))
        print(f"\nseconds = best of {a.repeat} wall times (time.perf_counter); vs ref = events/s over the reference's of the "
              "same job (the pandas reference; detect_stage's run_frame). Not asserted anywhere: a measurement of this machine.")
    finally:
        store.close()
        shutil.rmtree(store_dir, ignore_errors=True)

if __name__ == '__main__':
    main()
