"""The L2 book against independent references on the recorded Binance captures.

Expectations come from the raw capture (gzip + json, Binance's documented snapshot rule) and from plain dict
books (price -> size per side, best = max/min of the keys), never from velox.market.book itself."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from velox.market.book import L2Book, infer_tick, message_ends
from velox.events import price_from_str
from velox.feeds.recorded import binance_depth, load_binance

DATA = Path(__file__).resolve().parent.parent/'replay/data/binance'
FILES = sorted(DATA.glob('*.gz'))
IDS = [p.name.split('_')[0] for p in FILES]

# Measured on the two captures (BTCUSDT, ETHUSDT 2024-08-08), aligned by update id: every depth message agrees
# with the prevailing bookTicker on best bid and ask, price and size. Exact data, so the floor is the measurement.
AGREEMENT_FLOOR = 1.0


def raw_capture(path: Path) -> dict:
    "Depth messages (U, u, bids, asks), the snapshot and bookTicker events, straight from the capture."
    depth, tickers, snap = [], [], None
    with gzip.open(path, 'rt') as f:
        for line in f:
            ts, _, body = line.partition(' ')
            msg = json.loads(body)
            d = msg.get('data', msg)
            if 'lastUpdateId' in d: snap = (int(ts), d)
            elif d.get('e') == 'depthUpdate': depth.append((int(ts), d['U'], d['u'], d['b'], d['a']))
            elif 'bookTicker' in msg.get('stream', ''):
                tickers.append((d['u'], price_from_str(d['b']), float(d['B']), price_from_str(d['a']), float(d['A'])))
    return {'depth': depth, 'snapshot': snap, 'tickers': tickers}


def binance_rule_messages(raw: dict) -> list[list[tuple]]:
    "Messages of (side, price, size) a local book applies: the snapshot, then deltas with u > lastUpdateId."
    _, snap = raw['snapshot']
    last = snap['lastUpdateId']
    lv = lambda side, rows: [(side, price_from_str(p), float(q)) for p, q in rows]
    msgs = [lv(1, snap['bids']) + lv(-1, snap['asks'])]
    kept = [m for m in raw['depth'] if m[2] > last]
    assert kept[0][1] <= last + 1 <= kept[0][2], "first delta must straddle the snapshot"
    for prev, m in zip(kept, kept[1:]): assert m[1] == prev[2] + 1, "gap in the depth stream"
    return [msgs[0]] + [lv(1, m[3]) + lv(-1, m[4]) for m in kept], [last] + [m[2] for m in kept]


class DictBook:
    "Brute force: dicts per side, best = max/min of the keys, the documented crossing rule."
    def __init__(self): self.bids, self.asks = {}, {}

    def update(self, side, px, sz):
        mine, other = (self.bids, self.asks) if side > 0 else (self.asks, self.bids)
        if sz:
            mine[px] = sz
            if other and (px >= min(other) if side > 0 else px <= max(other)):
                for p in [p for p in other if (p <= px if side > 0 else p >= px)]: del other[p]
        else: mine.pop(px, None)

    def top(self):
        bb, ba = max(self.bids, default=0), min(self.asks, default=0)
        return (bb, self.bids.get(bb, 0.0), ba, self.asks.get(ba, 0.0))


@pytest.fixture(scope='module', params=FILES, ids=IDS)
def capture(request):
    path = request.param
    return path, raw_capture(path), binance_depth(path)


def test_book_matches_brute_force_dict_book_after_every_update(capture):
    _, _, b = capture
    top = L2Book(infer_tick(b['price'])).apply(b)
    ref = DictBook()
    for i, (side, px, sz) in enumerate(b[['side', 'price', 'size']].tolist()):
        if side == 0: ref = DictBook(); continue
        ref.update(side, px, sz)
        assert tuple(top[i].tolist()) == ref.top(), f"row {i}"


def test_deltas_only_book_matches_brute_force_dict_book_after_every_update(capture):
    path = capture[0]
    b = load_binance(path, snapshot=False)['book']
    top = L2Book(infer_tick(b['price'])).apply(b)
    ref = DictBook()
    for i, (side, px, sz) in enumerate(b[['side', 'price', 'size']].tolist()):
        ref.update(side, px, sz)
        assert tuple(top[i].tolist()) == ref.top(), f"row {i}"


def test_book_is_never_crossed_after_both_sides_first_exist(capture):
    path, _, b = capture
    for rows in (b, load_binance(path, snapshot=False)['book']):
        top = L2Book(infer_tick(rows['price'])).apply(rows)
        both = (top['bid'] > 0) & (top['ask'] > 0)
        first = int(np.argmax(both))
        assert both[first:].all()
        assert (top['bid'][first:] < top['ask'][first:]).all()


def test_raw_depth_stream_is_never_crossed_at_a_message_end_without_any_crossing_rule(capture):
    "The data itself: applied removals-first, no message leaves a crossed book, so the crossing rule only trims transients."
    _, raw, _ = capture
    msgs, _ = binance_rule_messages(raw)
    bids, asks = {}, {}
    for msg in msgs:
        for side, px, sz in sorted(msg, key=lambda r: r[2] != 0):
            d = bids if side > 0 else asks
            if sz: d[px] = sz
            else: d.pop(px, None)
        if bids and asks: assert max(bids) < min(asks)


def reference_agreement(msgs, uids, tickers):
    "Per depth message with both sides: top of a dict book vs the prevailing bookTicker (last one with u <= message u)."
    tu = np.array([t[0] for t in tickers])
    bids, asks, n, same_px, same_all = {}, {}, 0, 0, 0
    for msg, u in zip(msgs, uids):
        for side, px, sz in sorted(msg, key=lambda r: r[2] != 0):
            d = bids if side > 0 else asks
            if sz: d[px] = sz
            else: d.pop(px, None)
        j = int(np.searchsorted(tu, u, 'right')) - 1
        if j < 0 or not bids or not asks: continue
        _, tb, tbs, ta, tas = tickers[j]
        bb, ba = max(bids), min(asks)
        n += 1
        same_px += bb == tb and ba == ta
        same_all += bb == tb and ba == ta and bids[bb] == tbs and asks[ba] == tas
    return n, same_px / n, same_all / n


def test_book_top_agrees_with_book_ticker_aligned_by_update_id(capture):
    _, raw, b = capture
    msgs, uids = binance_rule_messages(raw)
    n, px, full = reference_agreement(msgs, uids, raw['tickers'])
    assert n > 3000 and px >= AGREEMENT_FLOOR and full >= AGREEMENT_FLOOR, (n, px, full)
    # velox's book at its message ends gives the same tops as the reference's
    top = L2Book(infer_tick(b['price'])).apply(b)[message_ends(b)]
    tu = np.array([t[0] for t in raw['tickers']])
    j = np.searchsorted(tu, b['update_id'][message_ends(b)], 'right') - 1
    ok = (j >= 0) & (top['bid'] > 0) & (top['ask'] > 0)
    tk = np.array(raw['tickers'], dtype=[('u', 'i8'), ('bid', 'i8'), ('bid_size', 'f8'), ('ask', 'i8'), ('ask_size', 'f8')])[j[ok]]
    assert ok.sum() == n
    assert all((top[c][ok] == tk[c]).mean() >= AGREEMENT_FLOOR for c in ('bid', 'bid_size', 'ask', 'ask_size'))


def test_deltas_only_book_agrees_with_book_ticker_wherever_it_has_seen_the_levels(capture):
    "No snapshot: the book holds only touched levels; where the ticker's best levels were touched, it agrees."
    _, raw, _ = capture
    tu = np.array([t[0] for t in raw['tickers']])
    bids, asks, seen, n, agree = {}, {}, set(), 0, 0
    for _, _, u, bl, al in raw['depth']:
        msg = [(1, price_from_str(p), float(q)) for p, q in bl] + [(-1, price_from_str(p), float(q)) for p, q in al]
        for side, px, sz in sorted(msg, key=lambda r: r[2] != 0):
            d = bids if side > 0 else asks
            seen.add((side, px))
            if sz: d[px] = sz
            else: d.pop(px, None)
        j = int(np.searchsorted(tu, u, 'right')) - 1
        if j < 0 or not bids or not asks: continue
        _, tb, tbs, ta, tas = raw['tickers'][j]
        if (1, tb) in seen and (-1, ta) in seen:
            n += 1
            agree += max(bids) == tb and min(asks) == ta and bids[tb] == tbs and asks[ta] == tas
    assert n > 3000 and agree / n >= AGREEMENT_FLOOR, (n, agree / n)
