"""Databento DBN files through velox's adapter (velox.feeds.databento), on the real CME samples of
tests/fixtures/vendor (NautilusTrader test data, LGPL-3.0, originally from Databento; see its README): every field equals
what the databento-dbn package's own decoder makes of the same records; bars that velox builds from the trades file
equal the vendor's own 1-minute bars; mbp-1 trades equal the trades file; an mbp-10 file written with the package
replays into velox's L2 book with the vendor's top of book; definitions fill the instrument registry."""
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pytest
import zstandard

from velox.feeds.databento import load_dbn, read_dbn
from velox.market.bars import ALL_PRINTS, LEAN, trade_bars
from velox.market.book import L2Book, message_ends
from velox.market.instruments import Instruments

from vendor_files import DATABENTO as VENDOR, ES_DEFS as DEFS, ES_MBP1 as MBP1, ES_OHLCV as OHLCV, ES_TRADES as TRADES


def plain(path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(Path(path).open('rb')).read()


def vendor_records(path):
    "(metadata, records) as the databento-dbn package decodes them."
    d = dbn.DBNDecoder(); d.write(plain(path)); recs = d.decode()
    return recs[0], recs[1:]


def char(x) -> str: return str(getattr(x, 'value', x))


def test_every_trade_field_equals_the_vendor_decoder():
    got, (_, ref) = read_dbn(TRADES), vendor_records(TRADES)
    tr = got.events['trade']
    assert tr['price'].tolist() == [r.price // 10 for r in ref] and all(r.price % 10 == 0 for r in ref)
    assert tr['size'].tolist() == [float(r.size) for r in ref]
    assert tr['ts'].tolist() == [r.ts_recv for r in ref]
    assert got.aggressor['trade'].tolist() == [{'B': 1, 'A': -1}.get(char(r.side), 0) for r in ref]
    assert set(tr['symbol'].tolist()) == {'ESU4'} and set(tr['venue'].tolist()) == {'GLBX'}


@pytest.mark.parametrize('name', ['esh4-glbx-mdp3-20231224.mbo.dbn.zst', 'orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst'])
def test_every_mbo_field_equals_the_vendor_decoder(name):
    m, (md, ref) = load_dbn(VENDOR / name)['mbo'], vendor_records(VENDOR / name)
    sym = next(iter(md.mappings))
    assert len(m) == len(ref)
    cols = {'order_id': [r.order_id for r in ref], 'ts': [r.ts_recv for r in ref], 'ts_event': [r.ts_event for r in ref],
            'flags': [int(r.flags) for r in ref], 'sequence': [r.sequence for r in ref], 'channel': [r.channel_id for r in ref],
            'action': [char(r.action) for r in ref], 'side': [{'B': 1, 'A': -1}.get(char(r.side), 0) for r in ref],
            'price': [0 if r.price == 2**63 - 1 else r.price // 10 for r in ref], 'size': [float(r.size) for r in ref]}
    for c, want in cols.items(): assert m[c].tolist() == want, c
    assert set(m['symbol'].tolist()) == {sym}


def test_mbp1_quotes_and_trades_equal_the_vendor_decoder_and_the_trades_file():
    got, (_, ref) = read_dbn(MBP1), vendor_records(MBP1)
    books = [r for r in ref if char(r.action) not in 'TF']
    q = got.events['quote']
    assert q['bid'].tolist() == [r.levels[0].bid_px // 10 for r in books]
    assert q['ask'].tolist() == [r.levels[0].ask_px // 10 for r in books]
    assert q['bid_size'].tolist() == [float(r.levels[0].bid_sz) for r in books]
    assert q['ts'].tolist() == [r.ts_recv for r in books]
    trades = read_dbn(TRADES)
    for c in ('ts', 'price', 'size'): assert got.events['trade'][c].tolist() == trades.events['trade'][c].tolist()
    assert got.aggressor['trade'].tolist() == trades.aggressor['trade'].tolist()


def test_bars_built_from_the_trades_equal_the_vendors_one_minute_bars():
    """velox's bar builder on the trades file against Databento's ohlcv-1m bars of the same minutes. The trades file
    covers 23:58:00-00:02:00 UTC, so four whole minutes overlap; every one must match exactly (open, high, low, close,
    volume). Both timestamps give the same minutes here (no trade is within a second of a minute boundary), and no
    print carries a condition, so velox's LEAN rule and ALL_PRINTS agree."""
    tr = load_dbn(TRADES)['trade']
    vendor = load_dbn(OHLCV)['bar']
    vendor = vendor[vendor['symbol'] == 'ESU4']
    for rule in (LEAN, ALL_PRINTS):
        mine = trade_bars(tr, '1m', session=None, rule=rule, tz='America/Chicago')
        assert len(mine) == 4
        want = vendor[np.isin(vendor['ts'], mine['ts'])]
        assert len(want) == 4
        cols = ['ts', 'open', 'high', 'low', 'close', 'volume']
        assert mine[cols].tolist() == want[cols].tolist()


def test_definitions_fill_the_instrument_registry_and_trades_get_the_cme_trade_date():
    reg = Instruments()
    d = read_dbn(DEFS, reg)
    assert [(i.symbol, i.tick, i.multiplier, i.calendar) for i in d.instruments] == [('ESU4', 25_000_000, 50.0, 'CME'), ('NQU4', 25_000_000, 20.0, 'CME')]
    assert reg.symbol_for('databento', 4358) == 'NQU4'
    tr = load_dbn(TRADES, reg)['trade']
    assert (tr['price'] % reg.get('ESU4').tick == 0).all()
    days = reg.get('ESU4').cal.trade_date(tr['ts'])
    assert set(days.astype(str).tolist()) == {'2024-07-02'}  # Monday evening in Chicago opens Tuesday's session


def test_a_plain_dbn_file_decodes_like_the_zstd_one(tmp_path):
    f = tmp_path / 'mbp1.dbn'; f.write_bytes(plain(MBP1))
    a, b = load_dbn(f), load_dbn(MBP1)
    assert a.keys() == b.keys() and all(a[k].tolist() == b[k].tolist() for k in a)


def test_an_mbp10_file_replays_into_the_l2_book_with_the_vendors_top_of_book(tmp_path):
    """An mbp-10 file written with the databento-dbn package from the real mbp-1 records (their top as level 0, and
    nine deeper levels one tick apart, with sizes that change): velox's level changes, replayed into L2Book, give at
    every record the top of book the record carries, and the ten levels it lists."""
    md, ref = vendor_records(MBP1)
    meta = dbn.Metadata(dataset=md.dataset, start=md.start, stype_in=md.stype_in, stype_out=md.stype_out, schema=dbn.Schema.MBP_10,
                        symbols=md.symbols, end=md.end)  # no symbology: the ids come from the definitions file
    recs, tick = [], 250_000_000
    for k, r in enumerate(ref[:300]):
        lv0 = r.levels[0]
        levels = [dbn.BidAskPair(lv0.bid_px - i * tick, lv0.ask_px + i * tick, lv0.bid_sz + (k + i) % 3 if i else lv0.bid_sz,
                                 lv0.ask_sz + (k * i) % 4 if i else lv0.ask_sz, 1, 1) for i in range(10)]
        recs.append(dbn.MBP10Msg(r.publisher_id, r.instrument_id, r.ts_event, r.price, r.size, r.action, r.side, 0, r.ts_recv,
                                 flags=r.flags, sequence=r.sequence + k, levels=levels))
    f = tmp_path / 'es.mbp-10.dbn'
    f.write_bytes(meta.encode() + b''.join(bytes(x) for x in recs))
    reg = Instruments(); read_dbn(DEFS, reg)
    book_rows = load_dbn(f, reg)['book']
    assert set(book_rows['symbol'].tolist()) == {'ESU4'}
    bk = L2Book(tick // 10)
    tops = bk.apply(book_rows)[message_ends(book_rows)]
    assert len(tops) == len(recs)
    assert tops['bid'].tolist() == [x.levels[0].bid_px // 10 for x in recs]
    assert tops['ask_size'].tolist() == [float(x.levels[0].ask_sz) for x in recs]
    assert bk.levels(1, 10)['price'].tolist() == [x.bid_px // 10 for x in recs[-1].levels]
    assert bk.levels(-1, 10)['size'].tolist() == [float(x.ask_sz) for x in recs[-1].levels]
