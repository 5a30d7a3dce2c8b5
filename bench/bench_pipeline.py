"""Throughput of the detect pipeline (replay -> NBBO -> outside-NBBO) on recorded data, against a pandas reference.

    python bench/bench_pipeline.py [--days N] [--symbols IBM,BAC] [--repeat R]
    velox bench pipeline            (same defaults)

Prints one row per way of running the job: events, best-of-R seconds, events/s, ns/event and the ratio of
events/s to the pandas reference run in this process. Nothing here is asserted except that every runner
finds the same alerts as the reference (so the rates compare the same work); see bench/README.md.
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

from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.runtime.runners import run_frame, run_replay
from velox.detect.params import detect_stage
from velox.runtime.stages import publish_replay, DETECT_INPUTS, DETECT_OUTPUTS

DEFAULT_DAY = '2013-10-08'
TZ, OPEN_NS, CLOSE_NS = 'America/New_York', (9 * 3600 + 30 * 60) * 10**9, 16 * 3600 * 10**9

# -- data --------------------------------------------------------------------------------------------------------

def pick_days(cat:Catalog, symbols:list[str], n:int, day:str) -> list[str]:
    "`day` alone when n == 1, else the first n days recorded (as tick quotes and trades) for every symbol."
    if n == 1: return [day]
    have = [{s.day for s in cat.sources() if s.fmt == 'lean_tick' and s.symbol == sym} for sym in symbols]
    days = sorted(set.intersection(*have))
    if n > len(days): raise SystemExit(f"--days {n}: only {len(days)} days recorded for {','.join(symbols)}: {', '.join(days)}")
    return days[:n]

def load_arrays(cat:Catalog, symbols:list[str], days:list[str]) -> list[ArraySource]:
    "Parse every source once; the runs below replay these in-memory copies, so file parsing is never timed."
    return [ArraySource(s.kind, s.symbol, s.load(), key=s.key)
            for sym in symbols for d in days for s in cat.find(sym, d)]

def to_frames(srcs:list[ArraySource]) -> tuple[pd.DataFrame, pd.DataFrame]:
    "The quote and trade arrays as DataFrames (what a pandas user would have after read_csv)."
    def frame(kind, cols):
        return pd.concat([pd.DataFrame({c: s.data[c] for c in cols}) for s in srcs if s.kind == kind], ignore_index=True)
    return (frame('quote', ('ts', 'symbol', 'bid', 'bid_size', 'ask', 'ask_size')),
            frame('trade', ('ts', 'symbol', 'price', 'size', 'seq')))

# -- the pandas reference: the same job, written independently --------------------------------------------------

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

# -- the velox runners -------------------------------------------------------------------------------------------

def velox_frame(srcs):
    return run_frame(detect_stage(), srcs, collect=('alert',)).outputs.get('alert')

def velox_replay(srcs):
    return run_replay(detect_stage(), Replay(srcs), collect=('alert',)).outputs.get('alert')

def velox_replay_sinks(srcs, store):
    from velox.infra.sinks import StoreSink, HotSink
    from velox.infra.hot import MemoryHot
    sinks = [StoreSink(store, kinds=('trade', 'alert')), HotSink(MemoryHot())]
    return run_replay(detect_stage(), Replay(srcs), sinks=sinks, collect=('alert',)).outputs.get('alert')

def velox_bus(srcs, split:dict|None=None):
    "publish_replay into a MemoryBus, then one Worker consumes to the end-of-stream markers; `split` gets the two times."
    from velox.infra.bus import MemoryBus
    from velox.runtime.worker import RunOptions, Worker, WorkerSettings
    bus = MemoryBus()
    t0 = time.perf_counter()
    publish_replay(bus, Replay(srcs))
    t1 = time.perf_counter()
    w = Worker(detect_stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, 'bench', WorkerSettings(poll_ms=5, collect=('alert',)))
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

def table(rows:list[tuple], ref_rate:float) -> str:
    "rows: (name, events, seconds, note); ratio = events/s over the reference's events/s."
    head = f"{'run':<44} {'events':>11} {'seconds':>9} {'events/s':>13} {'ns/event':>9} {'vs pandas':>9}"
    out = [head, '-' * len(head)]
    for name, n, sec, note in rows:
        rate = n / sec if sec else float('nan')
        ratio = f"{rate / ref_rate:8.2f}x" if note != 'load' else ''
        out.append(f"{name:<44} {n:>11,} {sec:>9.3f} {rate:>13,.0f} {sec / n * 1e9:>9.0f} {ratio:>9}")
    return '\n'.join(out)

def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_pipeline', description=__doc__.split('\n')[0])
    p.add_argument('--days', type=int, default=1, help='1 = --day only; N > 1 = the first N recorded days (5 = 2013-10-07..11)')
    p.add_argument('--day', default=DEFAULT_DAY, help=f'the day when --days 1 (default {DEFAULT_DAY})')
    p.add_argument('--symbols', default='IBM,BAC', help='comma-separated symbols (default IBM,BAC)')
    p.add_argument('--repeat', type=int, default=3, help='best of R timed runs per row (default 3)')
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data')
    p.add_argument('--data-dir', default=os.path.normpath(here), help='recorded data root (default: replay/data here)')
    a, _ = p.parse_known_args(argv)  # run_path'd by `velox bench`, sys.argv is the CLI's: ignore what is not ours
    symbols = [s.strip().upper() for s in a.symbols.split(',') if s.strip()]
    cat = Catalog(a.data_dir)
    days = pick_days(cat, symbols, a.days, a.day)

    print(f"velox bench pipeline · {','.join(symbols)} · {', '.join(days)} · best of {a.repeat}")
    print(f"machine: {machine()}\n")

    t0 = time.perf_counter(); srcs = load_arrays(cat, symbols, days); t_load = time.perf_counter() - t0
    n = sum(len(s.data) for s in srcs)
    t0 = time.perf_counter(); quotes, trades = to_frames(srcs); t_frames = time.perf_counter() - t0
    n_q, n_t = len(quotes), len(trades)
    print(f"{n:,} events: {n_q:,} quotes, {n_t:,} trades in {len(srcs)} sources\n")

    # Warm up (imports, numba/JIT, chDB start-up) and check every runner finds the reference's alerts, untimed.
    store_dir = tempfile.mkdtemp(prefix='velox-bench-')
    from velox.infra.stores import Store
    store = Store(f"chdb://{os.path.abspath(store_dir)}/chdb").migrate()
    try:
        runners = [('velox run_frame (notebook runner)', lambda: velox_frame(srcs)),
                   ('velox run_replay (in-process replay)', lambda: velox_replay(srcs)),
                   ('velox run_replay + chDB StoreSink + HotSink', lambda: velox_replay_sinks(srcs, store)),
                   ('velox bus: publish_replay + Worker', lambda: velox_bus(srcs))]
        ref_keys = alert_keys(pandas_outside_nbbo(quotes, trades))
        mismatches = []
        for name, fn in runners:
            got = alert_keys(fn())
            if got != ref_keys:
                mismatches.append(f"{name}: {len(got):,} alerts vs reference {len(ref_keys):,}; "
                                  f"only velox {sorted(got - ref_keys)[:5]}, only reference {sorted(ref_keys - got)[:5]}")
        print(f"alerts: {len(ref_keys):,} (reference)" + ('; every velox runner agrees' if not mismatches else ''))
        if mismatches:
            raise AssertionError('alert sets differ, the rates would not compare the same work:\n  ' + '\n  '.join(mismatches))

        rows = [('load: parse zip CSV -> arrays (once)', n, t_load, 'load'),
                ('load: arrays -> DataFrames (reference only)', n, t_frames, 'load')]
        t_ref, _ = best_of(lambda: pandas_outside_nbbo(quotes, trades), a.repeat)
        rows.append(('pandas reference (ffill + merge_asof)', n, t_ref, 'ref'))
        for name, fn in runners[:3]:
            rows.append((name, n, best_of(fn, a.repeat)[0], ''))
        split, best = {}, None
        for _ in range(a.repeat):
            gc.collect()
            s = {}; t0 = time.perf_counter(); velox_bus(srcs, s); t = time.perf_counter() - t0
            if best is None or t < best: best, split = t, s
        rows += [(runners[3][0], n, best, ''), ('  of which publish_replay', n, split['publish'], ''),
                 ('  of which Worker to end of stream', n, split['worker'], '')]
        print()
        print(table(rows, n / t_ref))
        print(f"\nseconds = best of {a.repeat} wall times (time.perf_counter); vs pandas = events/s over the reference's. "
              "Not asserted anywhere: a measurement of this machine.")
    finally:
        store.close()
        shutil.rmtree(store_dir, ignore_errors=True)

if __name__ == '__main__':
    main()
