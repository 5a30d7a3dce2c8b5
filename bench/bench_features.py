"""Features benchmark: per-update cost of the incremental indicators for one symbol, and the features stage
over a real day, against pandas references in the same run. Speed is measured here, never asserted."""
import argparse, platform, os, time
from pathlib import Path
import numpy as np
import pandas as pd
from velox.market.bars import trade_bars
from velox.events import PRICE_SCALE
from velox.market.features import FeatureStage, Indicators, SeedFeatures
from velox.feeds.recorded import Catalog
from velox.market.indicators import EWM, MACD, RSI, Bollinger, RollingStat
from velox.runtime.runners import run_frame

ROOT = Path(__file__).resolve().parent.parent


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--symbol', default='IBM'); ap.add_argument('--day', default='2013-10-08')
    ap.add_argument('--repeat', type=int, default=3)
    a, _ = ap.parse_known_args()
    trades = Catalog(ROOT / 'replay' / 'data').find(a.symbol, a.day, kinds=('trade',))[0]
    tr = trades.load()
    closes = (trade_bars(tr, '1m')['close'] / PRICE_SCALE)
    closes = closes[closes > 0]
    series = np.tile(closes, max(1, 20_000 // len(closes)))  # a long series of real 1-minute closes
    n = len(series)
    print(f"velox bench features · {a.symbol} {a.day} · best of {a.repeat}")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")

    def five():
        sma, ema, rsi, macd, bb = RollingStat(20), EWM.span(20), RSI(14), MACD(), Bollinger(20, 2.0)
        for v in series: sma.update(v); ema.update(v); rsi.update(v); macd.update(v); bb.update(v)
    def fused():
        sf = SeedFeatures()
        for v in series: sf.update(v)
    def all_ind():
        ind = Indicators()
        for v in series: ind.update(v, v, v, 100.0, 0)
    def pandas_five():  # the same five recomputed over the whole history at every update is what a naive
        s = pd.Series(series)  # pandas loop does; here the vectorised batch over the series, per update amortised
        s.rolling(20).mean(); s.ewm(span=20, adjust=False).mean(); d = s.diff()
        g, l = d.clip(lower=0), -d.clip(upper=0)
        g.ewm(alpha=1 / 14, adjust=False).mean() / l.ewm(alpha=1 / 14, adjust=False).mean()
        f, sl = s.ewm(span=12, adjust=False).mean(), s.ewm(span=26, adjust=False).mean()
        (f - sl).ewm(span=9, adjust=False).mean(); s.rolling(20).std(ddof=0)
    def pandas_incremental():  # pandas used incrementally: append a value, recompute the last row of each
        s = pd.Series(series[:200])
        for _ in range(200):
            s.rolling(20).mean().iloc[-1]; s.ewm(span=20, adjust=False).mean().iloc[-1]
    rows = []
    t = best(fused, a.repeat); rows.append(('5 seed features, fused njit SeedFeatures', n, t))
    t = best(five, a.repeat); rows.append(('5 seed features, 5 incremental objects', n, t))
    t = best(all_ind, a.repeat); rows.append(('all 12 indicators, incremental (per update)', n, t))
    t = best(pandas_five, a.repeat); rows.append(('pandas, 5 features vectorised over the series', n, t))
    t = best(pandas_incremental, a.repeat); rows.append(('pandas, recompute on each append (2 features)', 200, t))
    stage_t = best(lambda: run_frame(FeatureStage(), [trades]), a.repeat)
    print(f"{'run':<50} {'updates':>9} {'seconds':>9} {'us/update':>10}")
    print('-' * 82)
    for name, k, t in rows: print(f"{name:<50} {k:>9,} {t:>9.3f} {t / k * 1e6:>10.2f}")
    print(f"\nFeatureStage over the day (trades -> bars at 1m/5m/15m/1h -> indicators): {len(tr):,} trades in "
          f"{stage_t:.3f} s = {len(tr) / stage_t:,.0f} trades/s")
    print("\nNot asserted anywhere: a measurement of this machine.")


if __name__ == '__main__':
    main()
