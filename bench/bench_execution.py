"""Execution benchmark: signals + risk checks + paper fills through the in-process path (ExecutionStage over a real
day's NBBO for IBM and BAC), at several signal rates, with and without continuous guardrails. Measured, never asserted.

    python bench/bench_execution.py [--symbols IBM,BAC] [--day 2013-10-08] [--repeat 2] [--start HH:MM --end HH:MM]
    python bench/bench_execution.py --smoke     (IBM, 10:00-10:30 New York, signals every 60 s and 1 s, one run per row)
    velox bench execution

Before anything is timed, each configuration runs once through both runners: the replay runner must give the
notebook runner's orders and fills exactly (otherwise the script stops with the difference). `rejected` counts the
orders the guardrails turned down."""
import argparse, os, platform, time
from pathlib import Path
import numpy as np
from velox.core import NS, clock_ns, day_start_ns
from velox.events import batch
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource, Replay
from velox.trade.risk import Account, Limits, Strategy
from velox.runtime.runners import run_frame, run_replay

ROOT = Path(__file__).resolve().parent.parent
SMOKE = dict(symbols='IBM', start='10:00', end='10:30', repeat=1, rates='60,1')  # --smoke: half an hour of one symbol
STRATEGIES = ('momo', 'swing')


def signals(sym, lo, hi, every_ms, strategies):
    ts = np.arange(lo, hi, int(every_ms * 1e6))
    n = len(ts)
    return batch('signal', ts=ts, symbol=[sym] * n, strategy=np.array(strategies)[np.arange(n) % len(strategies)],
                 stage=['final'] * n, direction=np.where(np.arange(n) % 4 < 2, 1, -1), size=[100.0] * n,
                 id=[f'{sym}{i}' for i in range(n)])


def run(name, limits, srcs):
    "One run of ExecutionStage through `name` ('frame' or 'replay'), two accounts of both strategies; its outputs."
    accts = [Account(f'acct{i}', tuple(Strategy(s, limits) for s in STRATEGIES), limits=limits) for i in range(2)]
    stage = ExecutionStage(accts, PaperBroker(fee_per_share=0.005), latency_ms=1, stop_bps=20, target_bps=30)
    res = run_frame(stage, srcs, collect=('order', 'fill')) if name == 'frame' else \
        run_replay(stage, Replay(srcs), collect=('order', 'fill'))
    return res.outputs


def check(srcs, limits):
    "The replay runner gives the notebook runner's orders and fills exactly."
    ref, got = run('frame', limits, srcs), run('replay', limits, srcs)
    for kind in ('order', 'fill'):
        a, b = ref.get(kind), got.get(kind)
        if a is None or not len(a): raise AssertionError(f"no {kind} at all: the check would compare nothing")
        if b is None or not np.array_equal(a, b):
            raise AssertionError(f"run_replay's {kind}s differ from run_frame's ({0 if b is None else len(b):,} vs {len(a):,})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--symbols', default='IBM,BAC'); ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--repeat', type=int, default=2)
    ap.add_argument('--start', help='NBBO and signals from this New York time (HH:MM; default: the day, signals 09:30-16:00)')
    ap.add_argument('--end', help='NBBO and signals before this New York time (HH:MM)')
    ap.add_argument('--rates', default='60,5,1', help='seconds between signals, one group of rows each (default 60,5,1)')
    ap.add_argument('--smoke', action='store_true', help='a small real input (IBM, 10:00-10:30, signals every 60 s and 5 s), '
                    'one run per row: every check and the table (the test command runs this)')
    a, _ = ap.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    syms = a.symbols.split(',')
    cat = Catalog(ROOT / 'replay' / 'data')
    t0 = day_start_ns(a.day)
    lo = clock_ns(a.day, a.start, '--start') if a.start else t0 + 34200 * NS
    hi = clock_ns(a.day, a.end, '--end') if a.end else t0 + 57600 * NS
    quotes = {s: cat.find(s, a.day, kinds=('quote',))[0].load() for s in syms}
    if a.start or a.end: quotes = {s: q[(q['ts'] >= lo) & (q['ts'] < hi)] for s, q in quotes.items()}
    nbbo = {s: consolidated_nbbo(q)[0] for s, q in quotes.items()}
    n_nb = sum(map(len, nbbo.values()))
    span = f" · {a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else ''
    print(f"velox bench execution{' · smoke' if a.smoke else ''} · {','.join(syms)} {a.day}{span} · {n_nb:,} NBBO updates · "
          f"best of {a.repeat}")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")
    guard = Limits(max_daily_loss=5_000, max_drawdown=8_000, max_position=2_000, max_gross_exposure=1e6, max_orders_per_min=600)
    rates = [float(r) for r in a.rates.split(',')]
    plan = []
    for every_s in rates:
        sig = [signals(s, lo, hi, every_s * 1000, STRATEGIES) for s in syms]
        srcs = [ArraySource('nbbo', s, b) for s, b in nbbo.items()] + [ArraySource('signal', s, b) for s, b in zip(syms, sig)]
        for limits in (Limits(), guard):
            plan.append((every_s, limits, srcs, sum(map(len, sig))))
    for _, limits, srcs, _ in plan: check(srcs, limits)
    print(f"checked untimed: run_replay gives run_frame's orders and fills in all {len(plan)} configurations\n")

    print(f"{'signals every':>14} {'guardrails':>10} {'runner':>10} {'signals':>9} {'order ev':>8} {'fills':>8} {'s':>7} "
          f"{'rejected':>8} {'signals/s':>10} {'events/s':>11} {'vs frame':>8}")
    for every_s, limits, srcs, n_sig in plan:
        ref_s = None
        for name in ('frame', 'replay'):
            best, out = float('inf'), None
            for _ in range(a.repeat):
                t = time.perf_counter(); out = run(name, limits, srcs); best = min(best, time.perf_counter() - t)
            ref_s = ref_s or best
            o, f = out.get('order', ()), out.get('fill', ())
            rejected = int((o['status'] == 'REJECTED').sum()) if len(o) else 0
            print(f"{every_s:>12g} s {('on' if limits is guard else 'off'):>10} {name:>10} {n_sig:>9,} {len(o):>8,} "
                  f"{len(f):>8,} {best:>7.2f} {rejected:>8,} {n_sig / best:>10,.0f} {(n_sig + n_nb) / best:>11,.0f} {ref_s / best:>7.2f}x")
    print(f"\ns = best of {a.repeat} wall times; signals/s = signals handled (risk-checked, placed or rejected, filled against "
          "the NBBO) per second; vs frame = events/s over run_frame's on the same signals and guardrails. "
          "Not asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
