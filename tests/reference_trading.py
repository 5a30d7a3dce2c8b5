"Independent references for the trading tests: real NBBO windows, scripted signals, brute-force PnL and equity."
from functools import lru_cache
from pathlib import Path
import numpy as np
from velox.core import NS, day_start_ns
from velox.events import PRICE_SCALE, batch
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource

DATA = Path(__file__).resolve().parent.parent / 'replay/data'
DAY = '2013-10-08'


@lru_cache(maxsize=4)
def nbbo_window(symbols=('IBM', 'BAC'), day=DAY, start_h=10.0, end_h=12.0) -> dict:
    "{symbol: NBBO batch} of the recorded quotes between two New York hours."
    t0 = day_start_ns(day)
    lo, hi = t0 + int(start_h * 3600) * NS, t0 + int(end_h * 3600) * NS
    out = {}
    for sym in symbols:
        q = Catalog(DATA).find(sym, day, kinds=('quote',))[0].load()
        nb, _ = consolidated_nbbo(q[(q['ts'] >= lo) & (q['ts'] < hi)])
        out[sym] = nb
    return out


def scripted_signals(sym, lo, hi, every_s=600, offset_s=7, strategy='momo', size=100.0, pattern=(1, 1, -1)) -> np.ndarray:
    "A signal every `every_s` seconds from `lo` to `hi`, directions cycling through `pattern`."
    ts = np.arange(lo + offset_s * NS, hi, every_s * NS)
    d = np.array(pattern)[np.arange(len(ts)) % len(pattern)]
    return batch('signal', ts=ts, symbol=[sym] * len(ts), strategy=[strategy] * len(ts), stage=['final'] * len(ts),
                 direction=d, size=[size] * len(ts), id=[f'{strategy}-{sym}-{i}' for i in range(len(ts))])


def sources(nbbo:dict, signals:list) -> list:
    return [ArraySource('nbbo', s, b) for s, b in nbbo.items()] + [ArraySource('signal', str(b['symbol'][0]), b) for b in signals]


def brute_positions(fills) -> dict:
    "Per (account, strategy, symbol): net qty, average-cost realized PnL and fees, by a plain loop over fills."
    out = {}
    for f in fills:
        key = (str(f['account']), str(f['strategy']), str(f['symbol']))
        q, avg, real, fees = out.get(key, (0.0, 0.0, 0.0, 0.0))
        side, qty, px = int(f['side']), float(f['qty']), int(f['price']) / PRICE_SCALE
        fees += float(f['fee'])
        for _ in range(int(round(qty))):  # one share at a time: no formula for crossing zero to get wrong
            if q == 0 or (q > 0) == (side > 0):
                avg = (avg * abs(q) + px) / (abs(q) + 1); q += side
            else:
                real += px - avg if q > 0 else avg - px; q += side
                if q == 0: avg = 0.0
        out[key] = (q, avg, real, fees)
    return out


def equity_path(fills, nbbo:dict, account=None, strategy=None):
    "Times and equity ($) of a scope after every NBBO update and fill: cash + qty x mid - fees, from fills alone."
    f = fills
    if account is not None: f = f[f['account'] == account]
    if strategy is not None: f = f[f['strategy'] == strategy]
    times = np.unique(np.concatenate([b['ts'] for b in nbbo.values()] + [f['ts']]))
    eq = np.zeros(len(times))
    for sym, nb in nbbo.items():
        fs = f[f['symbol'] == sym]
        k = np.searchsorted(fs['ts'], times, 'right')  # fills at or before each time
        qty = np.r_[0, np.cumsum(fs['side'] * fs['qty'])][k]
        cash = np.r_[0, np.cumsum(-fs['side'] * fs['qty'] * fs['price'] / PRICE_SCALE - fs['fee'])][k]
        j = np.searchsorted(nb['ts'], times, 'right') - 1
        mid = np.where(j >= 0, (nb['bid'][j.clip(0)] + nb['ask'][j.clip(0)]) / 2 / PRICE_SCALE, np.nan)
        eq += cash + np.where(qty != 0, qty * np.nan_to_num(mid), 0.0)
    return times, eq
