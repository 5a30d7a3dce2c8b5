"""The L3 (market-by-order) book on Databento's real MBO samples (CME Globex ESH4 and ESM4; see
tests/fixtures/vendor/README.md): at every event end (F_LAST) its top of book equals the best bid and ask of an
independent brute-force order map kept here in plain dicts, from the records as the databento-dbn package decodes them
(no velox code in the reference); the level rows it emits replay into velox's L2 book and BookStage."""

import databento_dbn as dbn
import numpy as np
import pytest
import zstandard

from velox.feeds.databento import load_dbn
from velox.market.book import BookStage
from velox.market.l3 import F_LAST, L3Book, l3_stage

from vendor_files import DATABENTO as VENDOR, MBO_ESH4, MBO_ESM4

MBO = [MBO_ESH4.name, MBO_ESM4.name]


def vendor_records(name):
    "Records as the databento-dbn package decodes them (Python objects)."
    d = dbn.DBNDecoder()
    d.write(zstandard.ZstdDecompressor().stream_reader((VENDOR / name).open('rb')).read())
    return d.decode()[1:]


def brute_force_tops(recs):
    """Best bid/ask (price in 1e-9, total size) at every F_LAST record, from a dict of resting orders, rebuilt from
    scratch at each event end: Databento's rules (add, cancel by size, modify to price/size, clear; trade and fill
    change nothing)."""
    orders, tops = {}, []
    for r in recs:
        a, side = str(getattr(r.action, 'value', r.action)), str(getattr(r.side, 'value', r.side))
        if a == 'R': orders.clear()
        elif a == 'A': orders[r.order_id] = [side, r.price, r.size]
        elif a == 'M':
            if r.order_id in orders or side in 'AB': orders[r.order_id] = [side, r.price, r.size]
        elif a == 'C' and r.order_id in orders:
            o = orders[r.order_id]; o[2] -= min(r.size, o[2])
            if o[2] <= 0: del orders[r.order_id]
        if int(r.flags) & F_LAST:
            bids = [(p, s) for sd, p, s in orders.values() if sd == 'B' and s > 0]
            asks = [(p, s) for sd, p, s in orders.values() if sd == 'A' and s > 0]
            bb = max((p for p, _ in bids), default=None); ba = min((p for p, _ in asks), default=None)
            tops.append((bb // 10 if bb else 0, float(sum(s for p, s in bids if p == bb)),
                         ba // 10 if ba else 0, float(sum(s for p, s in asks if p == ba))))
    return tops


@pytest.mark.parametrize('name', MBO)
def test_the_l3_top_of_book_equals_a_brute_force_order_map_at_every_event_end(name):
    mbo = load_dbn(VENDOR / name)['mbo']
    book = L3Book()
    _, tops, ends = book.apply_tops(mbo)
    want = brute_force_tops(vendor_records(name))
    assert len(ends) == len(want) >= {MBO[0]: 1, MBO[1]: 180}[name]  # ESH4: one snapshot, one event
    assert tops.tolist() == want
    b, a = tops['bid'], tops['ask']
    assert ((b == 0) | (a == 0) | (b < a)).all()  # CME's book is never crossed at an event end


def test_the_l3_book_gives_the_same_tops_in_any_chunking():
    mbo = load_dbn(VENDOR / MBO[1])['mbo']
    whole = L3Book().apply_tops(mbo)[1]
    book, parts = L3Book(capacity=16), []  # tiny tables: the kernel must grow them mid-stream
    for chunk in np.array_split(mbo, 37): parts.append(book.apply_tops(chunk)[1])
    assert np.concatenate(parts).tolist() == whole.tolist()


def test_l3_level_rows_replay_into_the_l2_book_stage_as_nbbo():
    mbo = load_dbn(VENDOR / MBO[1])['mbo']
    book = L3Book()
    rows, tops, _ = book.apply_tops(mbo)
    nb = BookStage(venue='GLBX').on_window('ESM4', {'book': rows}, {})[0][1]
    changed = np.r_[True, (tops[1:] != tops[:-1])]
    first_two_sided = np.flatnonzero((tops['bid'] != 0) | (tops['ask'] != 0))[0]
    want = tops[changed & (np.arange(len(tops)) >= first_two_sided)]
    assert nb[['bid', 'bid_size', 'ask', 'ask_size']].tolist() == want.tolist()
    out = l3_stage(venue='GLBX').process_window([('mbo', mbo)])
    assert dict(out)['nbbo'].tolist() == nb.tolist()


def test_levels_sizes_and_counts_equal_the_resting_orders_at_the_end():
    name = MBO[0]
    mbo = load_dbn(VENDOR / name)['mbo']
    book = L3Book(); book.apply(mbo)
    orders = {}
    for r in vendor_records(name):  # the final resting orders, brute force
        a = str(getattr(r.action, 'value', r.action))
        if a == 'R': orders.clear()
        elif a in 'AM': orders[r.order_id] = (str(getattr(r.side, 'value', r.side)), r.price // 10, r.size)
        elif a == 'C' and r.order_id in orders:
            sd, p, s = orders[r.order_id]
            if s - r.size > 0: orders[r.order_id] = (sd, p, s - r.size)
            else: del orders[r.order_id]
    for side, code in ((1, 'B'), (-1, 'A')):
        lv = {}
        for sd, p, s in orders.values():
            if sd == code: c = lv.setdefault(p, [0.0, 0]); c[0] += s; c[1] += 1
        want = sorted(((p, s, c) for p, (s, c) in lv.items()), reverse=side > 0)[:10]
        assert book.levels_with_counts(side, 10).tolist() == want
    assert book.stats['orders'] == len(orders)


def test_a_book_saved_mid_stream_as_data_goes_on_like_the_original():
    from velox.stage import dump_state, load_state
    mbo = load_dbn(VENDOR / MBO[1])['mbo']
    book = L3Book(); book.apply(mbo[:9000])
    again = load_state(dump_state(book))
    assert again.apply_tops(mbo[9000:])[1].tolist() == book.apply_tops(mbo[9000:])[1].tolist()
    assert again.stats == book.stats


def test_queue_positions_equal_a_brute_force_fifo_of_the_real_orders():
    """Queue position (orders and size ahead on the level) of every resting order at the end of the ESM4 sample against
    a brute-force FIFO list per level: adds join the back, a price change or a size increase goes to the back, a
    decrease keeps its place (the exchange's FIFO rule, cited in nbs/market/06_l3.ipynb)."""
    name = MBO[1]
    mbo = load_dbn(VENDOR / name)['mbo']
    book = L3Book(); book.apply(mbo)
    queues, where = {}, {}  # (side, price) -> [order ids in priority], id -> [side, price, size]
    def leave(k):
        s, p, _ = where.pop(k); queues[(s, p)].remove(k)
    def join(k, s, p, q):
        where[k] = [s, p, q]; queues.setdefault((s, p), []).append(k)
    for r in vendor_records(name):
        a, k = str(getattr(r.action, 'value', r.action)), r.order_id
        s, p, q = str(getattr(r.side, 'value', r.side)), r.price // 10, r.size
        if a == 'R': queues.clear(); where.clear()
        elif a == 'A':
            if k in where: leave(k)
            join(k, s, p, q)
        elif a == 'M':
            if k not in where: join(k, s, p, q)
            elif where[k][:2] != [s, p] or q > where[k][2]: leave(k); join(k, s, p, q)
            else: where[k][2] = q
        elif a == 'C' and k in where:
            where[k][2] -= min(q, where[k][2])
            if where[k][2] <= 0: leave(k)
    checked = 0
    for k, (s, p, _q) in list(where.items())[::25]:
        ahead = queues[(s, p)][:queues[(s, p)].index(k)]
        assert book.queue_position(k) == (len(ahead), float(sum(where[j][2] for j in ahead))), k
        checked += 1
    assert checked > 100
