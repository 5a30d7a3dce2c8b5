"""Execution benchmark: signals + risk checks + paper fills through the in-process path (ExecutionStage over a real
day's NBBO for IBM and BAC), at several signal rates, with and without continuous guardrails. Measured, never asserted."""
import argparse, os, platform, time
from pathlib import Path
import numpy as np
from velox.core import NS, day_start_ns
from velox.events import batch
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource, Replay
from velox.trade.risk import Account, Limits, Strategy
from velox.runtime.runners import run_frame, run_replay

ROOT = Path(__file__).resolve().parent.parent


def signals(sym, lo, hi, every_ms, strategies):
    ts = np.arange(lo, hi, int(every_ms * 1e6))
    n = len(ts)
    return batch('signal', ts=ts, symbol=[sym] * n, strategy=np.array(strategies)[np.arange(n) % len(strategies)],
                 stage=['final'] * n, direction=np.where(np.arange(n) % 4 < 2, 1, -1), size=[100.0] * n,
                 id=[f'{sym}{i}' for i in range(n)])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--symbols', default='IBM,BAC'); ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--repeat', type=int, default=2)
    a, _ = ap.parse_known_args()
    syms = a.symbols.split(',')
    cat = Catalog(ROOT / 'replay' / 'data')
    nbbo = {s: consolidated_nbbo(cat.find(s, a.day, kinds=('quote',))[0].load())[0] for s in syms}
    t0 = day_start_ns(a.day)
    lo, hi = t0 + 34200 * NS, t0 + 57600 * NS
    n_nb = sum(map(len, nbbo.values()))
    print(f"velox bench execution · {','.join(syms)} {a.day} · {n_nb:,} NBBO updates · best of {a.repeat}")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")
    strategies = ('momo', 'swing')
    guard = Limits(max_daily_loss=5_000, max_drawdown=8_000, max_position=2_000, max_gross_exposure=1e6, max_orders_per_min=600)
    print(f"{'signals every':>14} {'guardrails':>10} {'runner':>10} {'signals':>9} {'order ev':>8} {'fills':>8} {'s':>7} "
          f"{'signals/s':>10} {'events/s':>11}")
    for every_ms in (60_000, 5_000, 1_000):
        sig = [signals(s, lo, hi, every_ms, strategies) for s in syms]
        srcs = [ArraySource('nbbo', s, b) for s, b in nbbo.items()] + [ArraySource('signal', s, b) for s, b in zip(syms, sig)]
        n_sig = sum(map(len, sig))
        for limits in (Limits(), guard):
            accts = [Account(f'acct{i}', tuple(Strategy(s, limits) for s in strategies), limits=limits) for i in range(2)]
            for name in ('frame', 'replay'):
                best, res = float('inf'), None
                for _ in range(a.repeat):
                    stage = ExecutionStage(accts, PaperBroker(fee_per_share=0.005), latency_ms=1, stop_bps=20, target_bps=30)
                    t = time.perf_counter()
                    res = run_frame(stage, srcs, collect=('order', 'fill')) if name == 'frame' else \
                        run_replay(stage, Replay(srcs), collect=('order', 'fill'))
                    best = min(best, time.perf_counter() - t)
                o, f = res.outputs.get('order', ()), res.outputs.get('fill', ())
                print(f"{every_ms / 1000:>12g} s {('on' if limits is guard else 'off'):>10} {name:>10} {n_sig:>9,} {len(o):>8,} "
                      f"{len(f):>8,} {best:>7.2f} {n_sig / best:>10,.0f} {(n_sig + n_nb) / best:>11,.0f}")


if __name__ == '__main__':
    main()
