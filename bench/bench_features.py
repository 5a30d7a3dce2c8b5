"""Features benchmark: per-update cost of the incremental indicators for one symbol, and the features stage
over a real day, against pandas references in the same run. Speed is measured here, never asserted.

    python bench/bench_features.py [--symbol IBM] [--day 2013-10-08] [--repeat 3] [--updates 20000] [--start HH:MM --end HH:MM]
    python bench/bench_features.py --smoke     (2,000 updates; the stage over IBM 10:00-11:00 New York; 20 symbols
                                                x 200 updates interleaved; one run per row)

Market rows: `SeedFeatureBank` updates the five features of --symbols series (each the real closes from a seeded
offset, price-scaled by num/16) interleaved as a market's bars close (every symbol once per round, in a seeded random
order), in one compiled call; the reference is one `SeedFeatures` per symbol with a Python dispatch per update.

Before anything is timed: the fused `SeedFeatures` must equal the five incremental objects, and both the pandas
formulation of the same five features, at every update (RSI after its warm-up: pandas' ewm is not seeded with the
first n changes as Wilder's is); and `FeatureStage` through the replay runner must equal the notebook runner."""
import argparse, platform, os, time
from pathlib import Path
import numpy as np
import pandas as pd
from velox.core import clock_ns
from velox.market.bars import trade_bars
from velox.events import PRICE_SCALE
from velox.market.features import FeatureStage, Indicators, SeedFeatureBank, SeedFeatures
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource, Replay
from velox.market.indicators import EWM, MACD, RSI, Bollinger, RollingStat
from velox.runtime.runners import run_frame, run_replay

ROOT = Path(__file__).resolve().parent.parent
SMOKE = dict(updates=2_000, start='10:00', end='11:00', repeat=1, symbols=20, per_symbol=200)  # --smoke: small, every check, the table
RSI_WARMUP = 600  # updates after which pandas' unseeded RSI agrees with Wilder's to ~1e-15 relative


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)


def five(series):
    "The five seed features by five incremental objects: columns sma, ema, rsi, macd, macd_signal, bb_mid, bb_upper, bb_lower."
    sma, ema, rsi, macd, bb = RollingStat(20), EWM.span(20), RSI(14), MACD(), Bollinger(20, 2.0)
    out = np.empty((len(series), 8))
    for i, v in enumerate(series):
        m, _ = sma.update(v); line, sig, _ = macd.update(v)
        out[i] = (m, ema.update(v), rsi.update(v), line, sig, *bb.update(v))
    return out


def fused(series):
    sf = SeedFeatures()
    return np.array([sf.update(v).copy() for v in series])


def pandas_five(series):
    "The same five features vectorised over the series with pandas (same column order as `five`)."
    s = pd.Series(series)
    sma, ema, d = s.rolling(20).mean(), s.ewm(span=20, adjust=False).mean(), s.diff()
    g, l = d.clip(lower=0), -d.clip(upper=0)
    rs = g.ewm(alpha=1 / 14, adjust=False).mean() / l.ewm(alpha=1 / 14, adjust=False).mean()
    rsi = 100 - 100 / (1 + rs)
    f, sl = s.ewm(span=12, adjust=False).mean(), s.ewm(span=26, adjust=False).mean()
    line = f - sl
    sig = line.ewm(span=9, adjust=False).mean()
    sd = s.rolling(20).std(ddof=0)
    return np.column_stack([sma, ema, rsi, line, sig, sma, sma + 2 * sd, sma - 2 * sd])


def check(series, trades):
    "Every velox result equals its reference (see the module's doc); raises with the first difference."
    inc, fu, pdx = five(series), fused(series), pandas_five(series)
    names = SeedFeatures.names
    for j, name in enumerate(names):
        np.testing.assert_allclose(fu[:, j], inc[:, j], rtol=1e-9, atol=1e-9, err_msg=f"SeedFeatures {name} vs incremental")
        start = RSI_WARMUP if name == 'rsi' else 0
        if len(series) <= start: raise AssertionError(f"{len(series)} updates: too few to check {name} after its warm-up")
        np.testing.assert_allclose(inc[start:, j], pdx[start:, j], rtol=1e-7, atol=1e-7, equal_nan=True,
                                   err_msg=f"incremental {name} vs pandas")
    a = run_frame(FeatureStage(), [trades])['indicator']
    b = run_replay(FeatureStage(), Replay([trades]))['indicator']
    if not len(a): raise AssertionError('FeatureStage produced nothing: the runner check would compare nothing')
    same = len(a) == len(b) and all(np.array_equal(a[f], b[f], equal_nan=a.dtype[f].kind == 'f') for f in a.dtype.names)
    if not same: raise AssertionError('FeatureStage: run_replay differs from run_frame')
    return len(a)


def market_stream(closes, n_sym:int, per_symbol:int, seed:int=0):
    "(symbol index, close) of `n_sym` series x `per_symbol` updates, interleaved round by round in a seeded order."
    rng = np.random.default_rng(seed)
    long = np.tile(closes, -(-(per_symbol + len(closes)) // len(closes)))
    offs, num = rng.integers(0, len(closes), n_sym), rng.integers(8, 65, n_sym)
    vals = np.stack([long[o:o + per_symbol] * m / 16 for o, m in zip(offs, num)])  # (symbol, update)
    rows = np.concatenate([rng.permutation(n_sym) for _ in range(per_symbol)])  # round k: every symbol's update k
    return rows, vals[rows, np.repeat(np.arange(per_symbol), n_sym)]


def check_market(rows, vals, n_check:int):
    "The bank equals each symbol's own SeedFeatures at every update, for the first `n_check` symbols; raises if not."
    out = SeedFeatureBank(rows.max() + 1).update(rows, vals)
    for i in range(n_check):
        one = SeedFeatures()
        want = np.array([one.update(x).copy() for x in vals[rows == i]])
        if not np.array_equal(out[rows == i], want, equal_nan=True):
            raise AssertionError(f"SeedFeatureBank differs from SeedFeatures on symbol {i}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--symbol', default='IBM'); ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--updates', type=int, default=20_000, help='length of the series of real 1-minute closes (default 20,000)')
    ap.add_argument('--start', help="the stage's trades from this New York time (HH:MM; default: the whole day)")
    ap.add_argument('--end', help="the stage's trades before this New York time (HH:MM)")
    ap.add_argument('--symbols', type=int, default=2000, help='symbols of the market rows (default 2,000)')
    ap.add_argument('--per-symbol', type=int, default=500, help='updates per symbol in the market rows (default 500)')
    ap.add_argument('--smoke', action='store_true', help='2,000 updates and an hour of trades, one run per row: every check '
                    'and the table (the test command runs this)')
    a, _ = ap.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    src = Catalog(ROOT / 'replay' / 'data').find(a.symbol, a.day, kinds=('trade',))[0]
    tr = src.load()
    closes = (trade_bars(tr, '1m')['close'] / PRICE_SCALE)
    closes = closes[closes > 0]
    series = np.tile(closes, -(-a.updates // len(closes)))[:a.updates]  # a long series of real 1-minute closes
    n = len(series)
    if a.start: tr = tr[tr['ts'] >= clock_ns(a.day, a.start, '--start')]
    if a.end: tr = tr[tr['ts'] < clock_ns(a.day, a.end, '--end')]
    trades = ArraySource('trade', a.symbol, tr, key=src.key)
    span = f"{a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else 'the day'
    print(f"velox bench features{' · smoke' if a.smoke else ''} · {a.symbol} {a.day} · {n:,} updates · stage over {span} "
          f"· best of {a.repeat}")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")
    n_ind = check(series, trades)
    m_rows, m_vals = market_stream(closes, a.symbols, a.per_symbol)
    n_check = min(a.symbols, 50)
    check_market(m_rows, m_vals, n_check)
    print(f"checked untimed: SeedFeatures == 5 incremental objects == pandas at every update (RSI after {RSI_WARMUP}); "
          f"FeatureStage run_replay == run_frame ({n_ind:,} indicator events); SeedFeatureBank == SeedFeatures per symbol "
          f"at every update ({n_check} of {a.symbols:,} symbols)\n")

    def five_timed():  # as `five` and `fused`, without keeping the values (the timed rows measure the updates alone)
        sma, ema, rsi, macd, bb = RollingStat(20), EWM.span(20), RSI(14), MACD(), Bollinger(20, 2.0)
        for v in series: sma.update(v); ema.update(v); rsi.update(v); macd.update(v); bb.update(v)
    def fused_timed():
        sf = SeedFeatures()
        for v in series: sf.update(v)
    def all_ind():
        ind = Indicators()
        for v in series: ind.update(v, v, v, 100.0, 0)
    def pandas_incremental():  # pandas used incrementally: append a value, recompute the last row of each
        s = pd.Series(series[:200])
        for _ in range(200):
            s.rolling(20).mean().iloc[-1]; s.ewm(span=20, adjust=False).mean().iloc[-1]
    def per_symbol_objects(k):  # the reference of the market rows: one SeedFeatures per symbol, a dispatch per update
        objs = [SeedFeatures() for _ in range(a.symbols)]
        for r, v in zip(m_rows[:k].tolist(), m_vals[:k].tolist()): objs[r].update(v)
    k_ref = min(len(m_rows), 200_000)
    t_ref = best(lambda: pandas_five(series), a.repeat)
    rows = [('pandas, 5 features vectorised over the series', n, t_ref, 'ref'),
            ('5 seed features, fused njit SeedFeatures', n, best(fused_timed, a.repeat), 'five'),
            ('5 seed features, 5 incremental objects', n, best(five_timed, a.repeat), 'five'),
            ('all 12 indicators, incremental (per update)', n, best(all_ind, a.repeat), ''),
            ('pandas, recompute on each append (2 features)', 200, best(pandas_incremental, a.repeat), '')]
    t_objs = best(lambda: per_symbol_objects(k_ref), a.repeat)
    t_bank = best(lambda: SeedFeatureBank(a.symbols).update(m_rows, m_vals), a.repeat)
    stage_t = best(lambda: run_frame(FeatureStage(), [trades]), a.repeat)
    print(f"{'run':<50} {'updates':>9} {'seconds':>9} {'us/update':>10} {'vs pandas':>9}")
    print('-' * 92)
    for name, k, t, what in rows:
        ratio = f"{(t_ref / n) / (t / k):8.2f}x" if what in ('ref', 'five') else ''
        print(f"{name:<50} {k:>9,} {t:>9.3f} {t / k * 1e6:>10.2f} {ratio:>9}")
    print(f"\nmarket: {a.symbols:,} symbols x {a.per_symbol:,} updates interleaved ({len(m_rows):,} symbol-updates)")
    print(f"{'SeedFeatures per symbol, Python dispatch (first ' + format(k_ref, ',') + ')':<50} {k_ref:>9,} {t_objs:>9.3f} "
          f"{t_objs / k_ref * 1e6:>10.3f} {'':>9}")
    print(f"{'SeedFeatureBank, one compiled call':<50} {len(m_rows):>9,} {t_bank:>9.3f} {t_bank / len(m_rows) * 1e6:>10.3f} "
          f"{(t_objs / k_ref) / (t_bank / len(m_rows)):8.1f}x  (vs the per-symbol objects)")
    print(f"\nFeatureStage over {span} (trades -> bars at 1m/5m/15m/1h -> indicators): {len(tr):,} trades in "
          f"{stage_t:.3f} s = {len(tr) / stage_t:,.0f} trades/s")
    print(f"\nseconds = best of {a.repeat}; vs pandas = the vectorised pandas row's us/update over this row's (the same five "
          "features; the incremental rows pay per update what pandas pays once per series). "
          "Not asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
