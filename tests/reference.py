"""Independent reference implementations for the tests: plain csv/zipfile/pandas, no velox code.

Lean tick CSVs: trades `time_ms, price, size, exchange, condition(hex), suspicious`; quotes
`time_ms, bid, bid_size, ask, ask_size, exchange, condition, suspicious`, one side per row."""
import csv, io, zipfile
from datetime import datetime, time
from zoneinfo import ZoneInfo
import pandas as pd

NY = ZoneInfo('America/New_York')


def raw_rows(path):
    "The CSV rows of the one member of a Lean zip, as lists of strings."
    with zipfile.ZipFile(path) as z:
        text = z.read(z.namelist()[0]).decode()
    return list(csv.reader(io.StringIO(text)))


def midnight_ns(day: str) -> int:
    return int(datetime.combine(datetime.strptime(day, '%Y-%m-%d').date(), time(0), NY).timestamp()) * 10**9


def nbbo_after_each_row(quote_rows):
    "Brute force: the (bid, bid_size, ask, ask_size) in force after each quote row (latest bid row, latest ask row)."
    bid = bsz = ask = asz = 0
    out = []
    for r in quote_rows:
        b, bs, a, as_ = int(r[1]), int(r[2]), int(r[3]), int(r[4])
        if b or bs: bid, bsz = b, bs
        if a or as_: ask, asz = a, as_
        out.append((bid, bsz, ask, asz))
    return out


def outside_nbbo_pandas(trade_path, quote_path, day: str, session=('09:30', '16:00'), tolerance_bps: float = 0.0) -> pd.DataFrame:
    """Trades printed outside the prevailing NBBO, with pandas: the quote state after the last quote row at or
    before the trade's millisecond (quotes before trades at equal times), two-sided and not crossed, regular hours;
    `tolerance_bps` of the trade's price beyond the quote (in 1e-8 dollars, rounded down) is still inside."""
    t0 = midnight_ns(day)
    q = pd.DataFrame(raw_rows(quote_path)).iloc[:, :5].astype('int64')
    q.columns = ['ms', 'bid', 'bid_size', 'ask', 'ask_size']
    q['bid'] = q['bid'].where((q['bid'] != 0) | (q['bid_size'] != 0)).ffill().fillna(0)
    q['ask'] = q['ask'].where((q['ask'] != 0) | (q['ask_size'] != 0)).ffill().fillna(0)
    q = q.groupby('ms', as_index=False).last()[['ms', 'bid', 'ask']]
    t = pd.DataFrame(raw_rows(trade_path))
    t = pd.DataFrame({'ms': t[0].astype('int64'), 'price': t[1].astype('int64'), 'venue': t[3], 'seq': range(len(t))})
    m = pd.merge_asof(t, q, on='ms', direction='backward', allow_exact_matches=True)
    local = pd.to_datetime(t0 + m['ms'] * 10**6, utc=True).dt.tz_convert(NY)
    hhmm = local.dt.strftime('%H:%M:%S.%f')
    in_session = (hhmm >= session[0]) & (hhmm < session[1])
    valid = (m['bid'] > 0) & (m['ask'] > 0) & (m['bid'] <= m['ask'])
    tol = (m['price'] * 10**4 * tolerance_bps // 10**4) / 10**4  # Lean prices are in 1e-4 dollars
    out = valid & in_session & ((m['price'] > m['ask'] + tol) | (m['price'] < m['bid'] - tol))
    res = m[out].copy()
    res['ts'] = t0 + res['ms'] * 10**6
    return res[['ts', 'seq', 'price', 'bid', 'ask', 'venue']].reset_index(drop=True)
