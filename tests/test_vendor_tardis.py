"""Tardis.dev CSV files through velox's adapter (velox.feeds.tardis), on the real samples of tests/fixtures/vendor
(NautilusTrader test data, LGPL-3.0, originally from Tardis; see its README). Incremental L2 replays into velox's
L2Book with snapshot handling and matches a brute-force dict book kept here after every message; the other data
types equal what pandas reads from the same files (prices compared as exact decimals)."""
import gzip
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from velox.feeds.tardis import load_tardis, read_tardis
from velox.market.book import L2Book, message_ends

VENDOR = Path(__file__).parent / 'fixtures' / 'vendor' / 'tardis'
L2 = VENDOR / 'deribit_incremental_book_L2_BTC-PERPETUAL.csv'


def e8(s) -> int: return int(Decimal(str(s)) * 10**8)


def incremental_file(tmp_path) -> Path:
    """The real Deribit snapshot, then updates (levels changed, removed, added on both sides) in messages of several rows,
    then a second snapshot (a reconnection) that must replace the book, then more updates."""
    lines = L2.read_text().splitlines()
    head, snap = lines[0], lines[1:]
    t, lt = 1585699200245000, 1585699200355684
    def row(k, snapshot, side, price, amount):
        return f"deribit,BTC-PERPETUAL,{t + k * 1000},{lt + k * 1000},{'true' if snapshot else 'false'},{side},{price},{amount}"
    upd = [row(1, False, 'bid', '6421', 500), row(1, False, 'bid', '6420.5', 700), row(2, False, 'ask', '6421.5', 0),
           row(3, False, 'ask', '6422', 90), row(3, False, 'bid', '6421', 0), row(3, False, 'bid', '6419', 40),
           row(4, False, 'ask', '6421', 5)]
    snap2 = [row(5, True, 'ask', '6430', 10), row(5, True, 'ask', '6431', 11), row(5, True, 'bid', '6429.5', 12), row(5, True, 'bid', '6428', 3)]
    more = [row(6, False, 'bid', '6429.5', 0), row(6, False, 'bid', '6429', 8), row(7, False, 'ask', '6430', 0)]
    f = tmp_path / L2.name
    f.write_text('\n'.join([head, *snap, *upd, *snap2, *more]) + '\n')
    return f


def brute_force_tops(path):
    "Best bid/ask after each message (rows sharing local_timestamp), from dicts: a snapshot run clears the book first."
    df = pd.read_csv(path, dtype=str)
    book, tops, prev_snap, prev_lt = {'bid': {}, 'ask': {}}, [], False, None
    for i, r in df.iterrows():
        snap = r.is_snapshot == 'true'
        if snap and (not prev_snap or r.local_timestamp != prev_lt): book = {'bid': {}, 'ask': {}}
        if Decimal(r.amount) == 0: book[r.side].pop(e8(r.price), None)
        else: book[r.side][e8(r.price)] = float(r.amount)
        prev_snap, prev_lt = snap, r.local_timestamp
        last = i + 1 == len(df) or df.local_timestamp[i + 1] != r.local_timestamp or (df.is_snapshot[i + 1] == 'true') != snap
        if last:
            bb = max(book['bid'], default=0); ba = min(book['ask'], default=0)
            tops.append((bb, book['bid'].get(bb, 0.0), ba, book['ask'].get(ba, 0.0)))
    return tops, book


def test_incremental_l2_replays_into_the_l2_book_with_snapshots_replacing_it(tmp_path):
    f = incremental_file(tmp_path)
    b = load_tardis(f)['book']
    assert (b['side'] == 0).sum() == 2  # one reset before each snapshot
    book = L2Book(50_000_000)
    tops = book.apply(b)[message_ends(b)]
    want, final = brute_force_tops(f)
    assert tops.tolist() == want
    for side, name in ((1, 'bid'), (-1, 'ask')):
        lv = book.levels(side, 100)
        assert dict(zip(lv['price'].tolist(), lv['size'].tolist())) == final[name]


def test_the_real_deribit_snapshot_is_one_reset_and_fifteen_asks():
    d = read_tardis(L2)
    df = pd.read_csv(L2, dtype=str)
    b = d.events['book']
    assert d.data_type == 'incremental_book_L2' and b['side'].tolist() == [0] + [-1] * 15
    assert b['price'][1:].tolist() == [e8(p) for p in df.price] and b['size'][1:].tolist() == df.amount.astype(float).tolist()
    assert b['ts'][1:].tolist() == (df.timestamp.astype('int64') * 1000).tolist()


def test_trades_equal_pandas_with_the_aggressor_side():
    d = read_tardis(VENDOR / 'bitmex_trades_XBTUSD.csv')
    df = pd.read_csv(VENDOR / 'bitmex_trades_XBTUSD.csv', dtype=str)
    tr = d.events['trade']
    assert tr['price'].tolist() == [e8(p) for p in df.price]
    assert tr['size'].tolist() == df.amount.astype(float).tolist()
    assert tr['ts'].tolist() == (df.timestamp.astype('int64') * 1000).tolist()
    assert d.aggressor['trade'].tolist() == df.side.map({'buy': 1, 'sell': -1}).tolist()
    assert set(tr['symbol'].tolist()) == {'XBTUSD'}


def test_quotes_equal_pandas():
    f = VENDOR / 'huobi-dm-swap_quotes_BTC-USD.csv'
    q, df = load_tardis(f)['quote'], pd.read_csv(f, dtype=str)
    assert q['bid'].tolist() == [e8(p) for p in df.bid_price] and q['ask'].tolist() == [e8(p) for p in df.ask_price]
    assert q['bid_size'].tolist() == df.bid_amount.astype(float).tolist() and q['ask_size'].tolist() == df.ask_amount.astype(float).tolist()


def test_each_book_snapshot_row_replaces_the_book_with_its_levels():
    for n in (5, 25):
        f = VENDOR / f'binance-futures_book_snapshot_{n}_BTCUSDT.csv'
        d, df = read_tardis(f), pd.read_csv(f, dtype=str)
        assert d.data_type == f'book_snapshot_{n}'
        b = d.events['book']
        book = L2Book(1_000_000)
        tops = book.apply(b)[message_ends(b)]
        assert len(tops) == len(df)
        assert tops['bid'].tolist() == [e8(p) for p in df['bids[0].price']]
        assert tops['ask_size'].tolist() == df['asks[0].amount'].astype(float).tolist()
        last = df.iloc[-1]
        assert book.levels(-1, 100)['price'].tolist() == [e8(last[f'asks[{i}].price']) for i in range(n)]
        assert book.levels(1, 100)['size'].tolist() == [float(last[f'bids[{i}].amount']) for i in range(n)]
        assert d.events['quote']['bid'].tolist() == tops['bid'].tolist()


def test_a_gzipped_file_reads_like_the_plain_one(tmp_path):
    f = tmp_path / 'trades.csv.gz'
    f.write_bytes(gzip.compress((VENDOR / 'bitmex_trades_XBTUSD.csv').read_bytes()))
    a, b = load_tardis(f)['trade'], load_tardis(VENDOR / 'bitmex_trades_XBTUSD.csv')['trade']
    assert np.array_equal(a, b)
