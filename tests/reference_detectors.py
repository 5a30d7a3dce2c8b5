"""Independent reference implementations of the issue-5 detectors: pandas and plain Python loops over the raw Lean
CSV rows, no velox code. Prices stay in Lean units (1/10,000 $); times in ms after New York midnight.

Conventions (the documented behaviour of velox.market.signing / velox.detect.darkpool / velox.detect.accumulation):
- NBBO at a trade: the quote state after the last quote row at or before `trade ms - lag` (quotes first at a tie);
- Lee-Ready: above the midpoint buy, below sell (two-sided, uncrossed quotes only), else the tick rule over all
  prints of the day in file order (zero tick repeats the last non-zero tick, 0 before any change);
- regular session 09:30-16:00 New York; intervals aligned to the New York clock;
- volumes skip suspicious and zero-size prints; prices (first/last/VWAP) come from prints with none of the
  special condition bits below, not suspicious, size > 0."""
import math
import numpy as np
import pandas as pd
from reference import raw_rows, midnight_ns

OFF = {'D', 'ADF', 'TRF', 'MW'}
# condition bits (data README) of the special print classes: ExtendedHours 13, FormT 10, OddLot 31, Cash 1, NextDay 2,
# Seller 3, Undocumented 30, Sold 11, OutOfSequence 14, AveragePrice 20, DerivativelyPriced 9, StockOption 18,
# PriorReferencePrice 25, OpeningPrints 6, ClosingPrints 7, ReOpeningPrints 8, Cross 21, OfficialClose 24, OfficialOpen 26
SPECIAL_BITS = [13, 10, 31, 1, 2, 3, 30, 11, 14, 20, 9, 18, 25, 6, 7, 8, 21, 24, 26]
SPECIAL_MASK = sum(1 << b for b in SPECIAL_BITS)
# prints at a negotiated / reference price, and official reports: no order flow (accumulation leaves them out of its
# volumes): AveragePrice 20, DerivativelyPriced 9, StockOption 18, PriorReferencePrice 25, Cross 21, OfficialClose 24,
# OfficialOpen 26
NO_FLOW_MASK = sum(1 << b for b in (20, 9, 18, 25, 21, 24, 26))
SESSION_MS = (9 * 3600 + 30 * 60) * 1000, 16 * 3600 * 1000


def quotes_by_ms(quote_path) -> pd.DataFrame:
    "NBBO state (bid, ask) after the last quote row of each millisecond."
    q = pd.DataFrame(raw_rows(quote_path)).iloc[:, :5].astype('int64')
    q.columns = ['ms', 'bid', 'bid_size', 'ask', 'ask_size']
    q['bid'] = q['bid'].where((q['bid'] != 0) | (q['bid_size'] != 0)).ffill().fillna(0)
    q['ask'] = q['ask'].where((q['ask'] != 0) | (q['ask_size'] != 0)).ffill().fillna(0)
    return q.groupby('ms', as_index=False).last()[['ms', 'bid', 'ask']]


def trades_frame(trade_path) -> pd.DataFrame:
    t = pd.DataFrame(raw_rows(trade_path))
    return pd.DataFrame({'ms': t[0].astype('int64'), 'price': t[1].astype('int64'), 'size': t[2].astype('float64'),
                         'venue': t[3], 'cond': t[4].map(lambda h: int(h, 16)), 'suspicious': t[5] == '1',
                         'seq': range(len(t))})


def with_quotes(t: pd.DataFrame, q: pd.DataFrame, lag_ms: int = 0) -> pd.DataFrame:
    "Each trade with the NBBO in force `lag_ms` before it (0 where none)."
    t = t.assign(qms=t['ms'] - lag_ms)
    m = pd.merge_asof(t, q.rename(columns={'ms': 'qms'}), on='qms', direction='backward')
    m[['bid', 'ask']] = m[['bid', 'ask']].fillna(0).astype('int64')
    return m


def lee_ready_loop(prices, bids, asks):
    "Plain loop: the Lee-Ready side of each trade."
    out, last_p, last_s = [], None, 0
    for p, b, a in zip(prices, bids, asks):
        tick = last_s
        if last_p is not None and p != last_p: tick = 1 if p > last_p else -1
        last_p, last_s = p, tick
        if b > 0 and a > 0 and b <= a and 2 * p != b + a: out.append(1 if 2 * p > b + a else -1)
        else: out.append(tick)
    return out


def classified_trades(trade_path, quote_path, lag_ms: int = 0) -> pd.DataFrame:
    m = with_quotes(trades_frame(trade_path), quotes_by_ms(quote_path), lag_ms)
    m['side'] = lee_ready_loop(m['price'].tolist(), m['bid'].tolist(), m['ask'].tolist())
    return m


def in_session(ms):
    return (ms >= SESSION_MS[0]) & (ms < SESSION_MS[1])


def block_prints(trade_path, quote_path, block_size=10_000, block_notional=200_000) -> pd.DataFrame:
    "Regular-hours block prints (size or notional), as dark_print (off-exchange) or block_print, with NBBO and side."
    m = classified_trades(trade_path, quote_path)
    notional = m['price'] / 1e4 * m['size']
    hit = ((m['size'] >= block_size) | (notional >= block_notional)) & (m['size'] > 0) & in_session(m['ms'])
    r = m[hit].copy()
    r['kind'] = np.where(r['venue'].isin(OFF), 'dark_print', 'block_print')
    return r.reset_index(drop=True)


def _bucket_ms(ms, minutes: int):
    "Start (ms after midnight) of the `minutes` interval of each time, aligned to the New York clock."
    step = minutes * 60_000
    return ms - ms % step  # the day's midnight is a New York clock boundary, so alignment is plain arithmetic


def interval_table(trade_path, quote_path, day: str, minutes: int, block_size=10_000, block_notional=200_000,
                   flow_only=False) -> pd.DataFrame:
    """Per regular-hours interval: volume, off-exchange, block, buy and sell volume, first/last/VWAP price-setting print;
    `flow_only`: volumes without the prints in NO_FLOW_MASK."""
    m = classified_trades(trade_path, quote_path)
    m = m[in_session(m['ms'])].copy()
    vol = np.where(m['suspicious'] | (m['size'] <= 0), 0.0, m['size'])
    if flow_only: vol = np.where((m['cond'] & NO_FLOW_MASK) != 0, 0.0, vol)
    notional = m['price'] / 1e4 * m['size']
    block = ((m['size'] >= block_size) | (notional >= block_notional)) & (m['size'] > 0)
    px = ((m['cond'] & SPECIAL_MASK) == 0) & ~m['suspicious'] & (m['size'] > 0)
    m = m.assign(vol=vol, off=np.where(m['venue'].isin(OFF), vol, 0.0), blk=np.where(block, vol, 0.0),
                 buy=np.where(m['side'] > 0, vol, 0.0), sell=np.where(m['side'] < 0, vol, 0.0),
                 pxv=np.where(px, m['size'], 0.0), pv=np.where(px, m['price'] / 1e4 * m['size'], 0.0),
                 pxp=np.where(px, m['price'], np.nan), start=_bucket_ms(m['ms'], minutes))
    rows = []
    for start, g in m.groupby('start', sort=True):
        p = g['pxp'].dropna()
        rows.append(dict(start=start, volume=g['vol'].sum(), off=g['off'].sum(), block=g['blk'].sum(), buy=g['buy'].sum(),
                         sell=g['sell'].sum(), pxv=g['pxv'].sum(), pv=g['pv'].sum(),
                         first=p.iloc[0] / 1e4 if len(p) else math.nan, last=p.iloc[-1] / 1e4 if len(p) else math.nan))
    f = pd.DataFrame(rows)
    t0 = midnight_ns(day)
    f['start_ns'], f['end_ns'] = t0 + f['start'] * 10**6, t0 + (f['start'] + minutes * 60_000) * 10**6
    f['day'] = day
    return f


def features(f: pd.DataFrame) -> pd.DataFrame:
    vwap = f['pv'] / f['pxv']
    return pd.DataFrame({'off_share': f['off'] / f['volume'], 'block_share': f['block'] / f['volume'],
                         'imbalance': (f['buy'] - f['sell']) / (f['buy'] + f['sell']),
                         'ret_bps': (f['last'] - f['first']) / f['first'] * 1e4,
                         'vwap_drift_bps': (f['last'] - vwap) / vwap * 1e4, 'vwap': vwap})


def z_against_earlier_days(table: pd.DataFrame, feature: str, min_volume: float, extra_ok=None) -> pd.Series:
    """z-score of each interval's `feature` against all qualifying intervals of strictly earlier days (sample std);
    NaN without an earlier day; 0 for a value equal to a flat history's mean."""
    ok = (table['volume'] >= min_volume) & (True if extra_ok is None else extra_ok)
    out = pd.Series(np.nan, index=table.index)
    for i in table.index[ok]:
        hist = table.loc[ok & (table['day'] < table.at[i, 'day']), feature].dropna()
        if table.loc[ok & (table['day'] < table.at[i, 'day']), 'day'].nunique() < 1 or len(hist) < 2: continue
        mean, sd, x = hist.mean(), hist.std(ddof=1), table.at[i, feature]
        out[i] = (x - mean) / sd if sd > 0 else (0.0 if x == mean else np.nan)
    return out
