"""Throughput of the indicator kernels (velox.market.kernels) on many symbols at once, against pandas doing the same work.

    python bench/bench_kernels.py [--symbols 2000] [--events 5000] [--repeat 3] [--only rsi,macd]
    python bench/bench_kernels.py --smoke     (100 symbols x 1,000 events, 5,000 updates, one run per row)

Data: SYNTHETIC, not recorded. Each symbol is a geometric random walk starting at 100 with 1e-4 log-return
steps, rounded to a one-cent tick grid (so, as in real trades, many consecutive prices repeat), and sizes
are round lots of 100..10,000 shares. Symbols are the int codes 0..S-1 (pandas' fastest groupby key); the
rows are already grouped by symbol, which is the layout the kernels take (values + segment offsets).

Two rows per kernel: the velox call on one core (numba.set_num_threads(1): the serial driver) with best-of-R
wall time (numba compile time excluded: every kernel runs once before timing) and the pandas formulation of
the same statistic (groupby().rolling / ewm / diff / cumsum), elements/s (= values in / seconds) and the
ratio; under it the same call on all of numba's threads (the parallel driver, over segments), with its ratio
to pandas and to one core. Before anything is timed, every kernel's parallel result is checked to equal its
one-core result bit for bit, and every velox result against its pandas counterpart (1e-6 relative; rolling
std only within pandas' own rounding noise), so the rates compare the same work. Then ns per update of the
incremental classes. Nothing is asserted about speed.
"""
from __future__ import annotations
import argparse
import gc
import os
import platform
import time
import numba
import numpy as np
import pandas as pd

import velox.market.indicators as I
import velox.market.kernels as K

SMOKE = dict(symbols=100, events=1_000, repeat=1, updates=5_000)  # --smoke: small (but parallel), every check, the tables


def make_data(n_sym:int, n_ev:int, seed:int=0):
    "Synthetic prices and sizes, grouped by symbol, plus the segment offsets."
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1e-4, (n_sym, n_ev))
    steps[:, 0] = 0
    px = np.round(100 * np.exp(np.cumsum(steps, axis=1)), 2).ravel()
    size = (rng.integers(1, 101, n_sym * n_ev) * 100).astype(np.float64)
    offsets = np.arange(n_sym + 1, dtype=np.int64) * n_ev
    return px, size, offsets


# -- pandas formulations ------------------------------------------------------------------------------------------

def pandas_rsi(g, n:int):
    "Wilder's RSI with pandas: the first average is the mean of the first n changes, then ewm(alpha=1/n, adjust=False)."
    ch = g['px'].diff()
    pos = g.cumcount()
    def wilder(part):
        seed = part.groupby(g.ngroup()).rolling(n).mean().reset_index(level=0, drop=True)
        col = part.where(pos > n, seed.where(pos == n))
        return col.groupby(g.ngroup()).ewm(alpha=1 / n, adjust=False).mean().reset_index(level=0, drop=True)
    gain, loss = wilder(ch.clip(lower=0)), wilder((-ch).clip(lower=0))
    return (100 - 100 / (1 + gain / loss)).where(loss != 0, 100.0).where(gain.notna())

def pandas_macd(g, key):
    line = (g['px'].ewm(span=12, adjust=False).mean() - g['px'].ewm(span=26, adjust=False).mean()).reset_index(level=0, drop=True)
    sig = line.groupby(key).ewm(span=9, adjust=False).mean().reset_index(level=0, drop=True)
    return line, sig, line - sig

def rows_of(r):
    "A groupby-rolling/ewm result back in row order."
    return r.reset_index(level=0, drop=True)


def cases(df, px, size, offs):
    "(name, velox call, pandas call, how to compare) for every kernel."
    g = df.groupby('sym', sort=False)
    key = df['sym']
    w = 20
    roll = g['px'].rolling(w)
    return [
        ('rolling_sum(20)', lambda: K.rolling_sum(px, offs, w), lambda: rows_of(roll.sum()), 'rel'),
        ('rolling_mean(20) = sma', lambda: K.rolling_mean(px, offs, w), lambda: rows_of(roll.mean()), 'rel'),
        ('rolling_std(20)', lambda: K.rolling_std(px, offs, w), lambda: rows_of(roll.std()), 'noise'),
        ('rolling_max(20)', lambda: K.rolling_max(px, offs, w), lambda: rows_of(roll.max()), 'rel'),
        ('rolling_min(20)', lambda: K.rolling_min(px, offs, w), lambda: rows_of(roll.min()), 'rel'),
        ('ewm_mean(0.1)', lambda: K.ewm_mean(px, offs, 0.1), lambda: rows_of(g['px'].ewm(alpha=0.1, adjust=False).mean()), 'rel'),
        ('ewm_std(0.1)', lambda: K.ewm_std(px, offs, 0.1), lambda: rows_of(g['px'].ewm(alpha=0.1, adjust=False).std()), 'rel'),
        ('ema(20)', lambda: K.ema(px, offs, 20), lambda: rows_of(g['px'].ewm(span=20, adjust=False).mean()), 'rel'),
        ('rsi(14)', lambda: K.rsi(px, offs, 14), lambda: pandas_rsi(g, 14), 'rel'),
        ('macd(12,26,9)', lambda: K.macd(px, offs), lambda: pandas_macd(g, key), 'abs'),
        ('bollinger(20,2)', lambda: K.bollinger(px, offs, 20, 2),
         lambda: (lambda m, s: (m, m + 2 * s, m - 2 * s))(rows_of(roll.mean()), rows_of(roll.std(ddof=0))), 'noise'),
        ('zscore(20)', lambda: K.zscore(px, offs, w),
         lambda: (df['px'] - rows_of(roll.mean())) / rows_of(roll.std()), 'skip'),
        ('momentum(10)', lambda: K.momentum(px, offs, 10), lambda: g['px'].diff(10), 'rel'),
        ('vwap_session', lambda: K.vwap_session(px, size, offs),
         lambda: df['pv'].groupby(key).cumsum() / g['size'].cumsum(), 'rel'),
        ('vwap_rolling(100)', lambda: K.vwap_rolling(px, size, offs, 100),
         lambda: rows_of(df['pv'].groupby(key).rolling(100).sum()) / rows_of(g['size'].rolling(100).sum()), 'rel'),
    ]


def same(name, got, want, how):
    "Check the two sides computed the same statistic (not a test of accuracy: see nbs/market/03_kernels.ipynb)."
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want):
        b = np.asarray(b, dtype=float)
        if not (np.isnan(a) == np.isnan(b)).all(): raise AssertionError(f"{name}: NaN positions differ from pandas")
        if how == 'rel': np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)
        elif how == 'abs': np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
        elif how == 'noise': np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
        # 'skip': z-scores divide by pandas' noisy std (exactly 0 vs ~1e-9 in constant windows): not comparable


def one_core(fn):
    "`fn` with numba held to one thread in this thread: the kernels' serial driver."
    def run():
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try: return fn()
        finally: numba.set_num_threads(before)
    return run


def identical(name, par, one):
    "The parallel driver must give the serial driver's values to the bit (NaNs in the same places)."
    par, one = (par if isinstance(par, tuple) else (par,)), (one if isinstance(one, tuple) else (one,))
    for a, b in zip(par, one, strict=True): np.testing.assert_array_equal(a, b, err_msg=f"{name}: parallel != one core")


def best_of(fn, repeat:int):
    best, out = float('inf'), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t0)
    return best, out


def incremental(px, size, n:int):
    "ns per update of each incremental class over the first n values of one series."
    xs, vs = px[:n].tolist(), size[:n].tolist()
    out = []
    for name, make, two in (('RollingStat(20)', lambda: I.RollingStat(20), False), ('EWM(0.1)', lambda: I.EWM(0.1), False),
                            ('RSI(14)', lambda: I.RSI(14), False), ('MACD()', lambda: I.MACD(), False),
                            ('Bollinger(20,2)', lambda: I.Bollinger(20, 2), False), ('VWAP()', lambda: I.VWAP(), True),
                            ('VWAP(100)', lambda: I.VWAP(100), True)):
        obj = make(); up = obj.update
        gc.collect()
        t0 = time.perf_counter()
        if two:
            for p, v in zip(xs, vs): up(p, v)
        else:
            for p in xs: up(p)
        out.append((name, n, (time.perf_counter() - t0) / n * 1e9))
    return out


def machine() -> str:
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · numba {numba.__version__} · pandas {pd.__version__}")


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_kernels', description=__doc__.split('\n')[0])
    p.add_argument('--symbols', type=int, default=2000, help='number of symbols (segments), default 2000')
    p.add_argument('--events', type=int, default=5000, help='events per symbol, default 5000')
    p.add_argument('--repeat', type=int, default=3, help='best of R timed runs per row (default 3)')
    p.add_argument('--only', default='', help='comma-separated name prefixes of the rows to run')
    p.add_argument('--updates', type=int, default=200_000, help='values fed to each incremental class (default 200,000)')
    p.add_argument('--smoke', action='store_true', help='100 symbols x 1,000 events, one run per row: every check and the '
                   'tables (the test command runs this)')
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    px, size, offs = make_data(a.symbols, a.events)
    n = len(px)
    df = pd.DataFrame({'sym': np.repeat(np.arange(a.symbols), a.events), 'px': px, 'size': size})
    df['pv'] = df['px'] * df['size']
    print(f"velox bench kernels{' · smoke' if a.smoke else ''} · {a.symbols:,} symbols x {a.events:,} events = {n:,} values (synthetic random walks, "
          f"one-cent ticks) · best of {a.repeat}")
    print(f"machine: {machine()}")
    from velox.market.kernels_cuda import gpu_available
    threads = numba.get_num_threads()  # starts numba's threads, which fixes its threading layer
    K.KERNEL_THREADS = threads  # opt in to the parallel driver (velox's default is one core)
    print(f"backend: {'cuda' if gpu_available() else 'cpu'} (auto) for 'auto' calls; these rows force the CPU: one core "
          f"(numba.set_num_threads(1)) and parallel over segments on {threads} numba threads, "
          f"threading layer {numba.threading_layer()!r}")
    if threads < 2 or n < K.PARALLEL_MIN_VALUES or a.symbols < 2:
        print(f"note: {threads} thread(s), {n:,} values (parallel from {K.PARALLEL_MIN_VALUES:,}), {a.symbols} symbols: "
              "the parallel rows run on one core")

    only = [s.strip() for s in a.only.split(',') if s.strip()]
    picked = [c for c in cases(df, px, size, offs) if not only or any(c[0].startswith(o) for o in only)]
    for name, vx, pdf, how in picked:  # every check before anything is timed; numba compiles (or loads its cache) here
        got = vx()
        identical(name, got, one_core(vx)())
        same(name, got, pdf(), how)
    print(f"checked before timing: {len(picked)} kernels, parallel == one core bit for bit, velox == pandas\n")

    rows = []
    head = (f"{'kernel':<24} {'velox s':>9} {'velox elem/s':>14} {'pandas s':>9} {'pandas elem/s':>14} {'vs pandas':>10} "
            f"{'vs 1 core':>10}")
    print(head); print('-' * len(head))
    for name, vx, pdf, _how in picked:
        t1, _ = best_of(one_core(vx), a.repeat)
        tv, _ = best_of(vx, a.repeat)
        tp, _ = best_of(pdf, a.repeat)
        rows.append((name, t1, tv, tp))
        print(f"{name:<24} {t1:>9.4f} {n / t1:>14,.0f} {tp:>9.3f} {n / tp:>14,.0f} {tp / t1:>9.1f}x", flush=True)
        print(f"{'  parallel, ' + str(threads) + ' threads':<24} {tv:>9.4f} {n / tv:>14,.0f} {'':>9} {'':>14} "
              f"{tp / tv:>9.1f}x {t1 / tv:>9.2f}x", flush=True)
    if rows:
        t1, tv, tp = (np.array(c) for c in list(zip(*rows))[1:])
        for label, r in (('one core vs pandas', tp / t1), (f'parallel ({threads} threads) vs pandas', tp / tv),
                         ('parallel vs one core', t1 / tv)):
            print(f"{label + ':':<34} median {np.median(r):.2f}x, min {r.min():.2f}x, max {r.max():.2f}x")
        print(f"{(tp / tv >= 50).sum()} of {len(rows)} kernels at >= 50x pandas in parallel, {(tp / t1 >= 50).sum()} on one core")

    print(f"\n{'incremental class':<24} {'updates':>10} {'ns/update':>10}")
    for name, k, ns in incremental(px, size, min(a.updates, n)):
        print(f"{name:<24} {k:>10,} {ns:>10,.0f}")
    print("\nseconds = best of R wall times (time.perf_counter, gc.collect() before each); elem/s = values / seconds. "
          "Not asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
