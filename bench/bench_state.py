"""Saved-state benchmark: writing and reading the state stages checkpoint (`velox.stage.dump_state` / `load_state`,
data only) against pickle (protocol 5, what velox wrote before issue 14) on the same states, in the same run.

    python bench/bench_state.py [--day 2013-10-08] [--symbols IBM,BAC] [--repeat 20] [--start HH:MM --end HH:MM]
    python bench/bench_state.py --smoke     (IBM+BAC 10:00-11:00 New York; one run per row)

States: the detect stage (NBBO + dark pool) at the end of the replay (before its flush) and two thirds of the way;
the features stage (bars and every timeframe's indicator objects) at the end; the execution stage with performance
two thirds into two hours (from 10:00) of scripted signals on the recorded NBBO (orders in flight, positions,
guardrails); and the whole
trading graph (detect, features, lr + gbt predictions, ensemble, execution) with the models of
tests/fixtures/pre_layers, migrated to a temporary copy. A worker checkpoints every second by default, so the
sum of a write and a read is what matters against that second.

Before anything is timed, a stage restored from each state must carry on to exactly the outputs of the stage it
was saved from (over the rest of the replay).
"""
from __future__ import annotations
import argparse, gc, os, pickle, platform, shutil, tempfile, time
from pathlib import Path
import numpy as np
from velox.core import NS, clock_ns
from velox.detect.params import detect_stage
from velox.events import batch
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.market.features import FeatureStage
from velox.market.nbbo import consolidated_nbbo
from velox.runtime.runners import Collector
from velox.stage import dump_state, load_state

ROOT = Path(__file__).resolve().parent.parent
SMOKE = dict(start='10:00', end='11:00', repeat=1)


def best(fn, repeat):
    ts, out = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t0)
    return min(ts), out


def windows(srcs, chunk_rows=8192):
    return [[(s.kind, b) for s, b in w] for w in Replay(srcs, chunk_rows=chunk_rows).windows()]


def played(make, wins, upto):
    st = make()
    for w in wins[:upto]: st.process_window(w)
    return st


def leaves(stage) -> list:
    return [x for s in stage.stages for x in leaves(s)] if hasattr(stage, 'stages') else [stage]


def check(name, make, wins, upto):
    "A stage restored from the state at `upto` finishes the replay exactly as the stage it was saved from."
    st = played(make, wins, upto)
    fresh = make(); fresh.restore(st.snapshot())
    outs = []
    for s in (st, fresh):
        c = Collector()
        for w in wins[upto:]: c.add(s.process_window(w))
        c.add(s.flush()); outs.append(c.result())
    a, b = outs
    for k in a:
        if 'infer_us' in (a[k].dtype.names or ()): a[k]['infer_us'] = b[k]['infer_us'] = 0  # measured, differs by design
    if sorted(a) != sorted(b) or any(a[k].tobytes() != b[k].tobytes() for k in a):
        raise SystemExit(f'{name}: a stage restored from the state did not carry on as the original')
    return st


def scripted_signals(sym, lo, hi, every_s, size, strategy='momo'):
    ts = np.arange(lo + 7 * NS, hi, every_s * NS)
    d = np.array([1, 1, -1])[np.arange(len(ts)) % 3]
    return batch('signal', ts=ts, symbol=[sym] * len(ts), strategy=[strategy] * len(ts), stage=['final'] * len(ts),
                 direction=d, size=[size] * len(ts), id=[f'{strategy}-{sym}-{i}' for i in range(len(ts))])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--day', default='2013-10-08'); ap.add_argument('--symbols', default='IBM,BAC')
    ap.add_argument('--repeat', type=int, default=20)
    ap.add_argument('--start', help='from this New York time (HH:MM; default: the whole day)')
    ap.add_argument('--end', help='before this New York time (HH:MM)')
    ap.add_argument('--smoke', action='store_true', help='an hour of IBM+BAC, one run per row: every check and the table')
    a, _ = ap.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    syms = a.symbols.upper().split(',')
    lo = clock_ns(a.day, a.start, '--start') if a.start else None
    hi = clock_ns(a.day, a.end, '--end') if a.end else None
    cut = lambda b: b[(b['ts'] >= (lo or -2**63)) & (b['ts'] < (hi or 2**63 - 1))]
    srcs = [ArraySource(s.kind, s.symbol, cut(s.load())) for sym in syms for s in Catalog(ROOT / 'replay' / 'data').find(sym, a.day)]
    span = f"{a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else 'the whole day'
    print(f"velox bench state{' · smoke' if a.smoke else ''} · {','.join(syms)} {a.day} {span} · best of {a.repeat}")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")

    wins, trade_wins = windows(srcs), windows([s for s in srcs if s.kind == 'trade'], 20_000)
    t0 = lo or clock_ns(a.day, '10:00', 'the execution window')  # two hours of the session, from 10:00 or --start
    nb = {s.symbol: consolidated_nbbo(s.data)[0] for s in srcs if s.kind == 'quote'}
    sig = [scripted_signals(sym, t0, t0 + 2 * 3600 * NS, 300 + 120 * i, 100 * (i + 1)) for i, sym in enumerate(syms)]
    exec_wins = windows([ArraySource('nbbo', s, b[(b['ts'] >= t0) & (b['ts'] < t0 + 2 * 3600 * NS)]) for s, b in nb.items()] +
                        [ArraySource('signal', str(b['symbol'][0]), b) for b in sig if len(b)], 4096)

    def execution():
        from velox.runtime.stages import execution_stage
        return execution_stage({'accounts': [{'name': 'a', 'strategies': [{'name': 'momo'}]}, {'name': 'b', 'strategies': [{'name': 'momo'}]}],
                                'latency_ms': 3, 'tif': 'DAY', 'stop_bps': 15, 'target_bps': 25})
    cases = [('detect, end of replay', detect_stage, wins, len(wins)), ('detect, 2/3 of the replay', detect_stage, wins, 2 * len(wins) // 3),
             ('features, end of replay', FeatureStage, trade_wins, len(trade_wins)),
             ('execution + performance, 2/3 of 2 h', execution, exec_wins, 2 * len(exec_wins) // 3)]
    fixture, tmp = ROOT / 'tests' / 'fixtures' / 'pre_layers' / 'registry', None
    if fixture.is_dir():
        from velox.runtime.stages import trading_stage
        from velox.trade.registry import ModelRegistry
        tmp = Path(tempfile.mkdtemp())
        reg = ModelRegistry(shutil.copytree(fixture, tmp / 'registry')); reg.migrate()
        ex = {'accounts': [{'name': 'paper', 'strategies': [{'name': 'ensemble'}]}]}
        cases.append(('trading graph (fixture models), 2/3', lambda: trading_stage(reg.root, execution=ex, ensemble={'min_tier': 'D'}),
                      wins, 2 * len(wins) // 3))
    print(f"{'state':<40} {'pickle B':>10} {'data B':>10} {'pickle w+r ms':>14} {'data w ms':>10} {'data r ms':>10} "
          f"{'data w+r ms':>12} {'x pickle':>9}")
    print('-' * 123)
    for name, make, ws, upto in cases:
        check(name, make, ws, upto)
        states = [x.state for x in leaves(played(make, ws, upto))]  # as at `upto` (check carried its stage on)
        tw, data = best(lambda s=states: dump_state(s), a.repeat)
        tr, _ = best(lambda d=data: load_state(d), a.repeat)
        pw, p = best(lambda s=states: pickle.dumps(s, protocol=5), a.repeat)
        pr, _ = best(lambda d=p: pickle.loads(d), a.repeat)
        print(f"{name:<40} {len(p):>10,} {len(data):>10,} {(pw + pr) * 1e3:>14.3f} {tw * 1e3:>10.3f} {tr * 1e3:>10.3f} "
              f"{(tw + tr) * 1e3:>12.3f} {(tw + tr) / (pw + pr):>8.1f}x")
    if tmp: shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nw = write (dump_state / pickle.dumps), r = read (load_state / pickle.loads) of every leaf stage's state; "
          f"best of {a.repeat}. Checked untimed: a stage restored from each state carries on exactly as the "
          "original. Not asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
