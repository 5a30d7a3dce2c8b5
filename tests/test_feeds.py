"""Loaders for recorded data: integrity on every real file, and one clear DataError for each kind of bad input.

Expectations come from the raw text (zipfile/gzip + csv/json modules), never from the loaders themselves. The validator's
rules on corrupted copies of these files are in test_validate.py; load speed is measured in bench/bench_validate.py."""
import csv, gzip, io, json, zipfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from velox.core import DataError
from velox.feeds.recorded import Catalog, Source, lean_tick_csv, load_binance, load_jsonl, load_lean_minute, load_lean_ticks

DATA = Path(__file__).resolve().parent.parent/'replay/data'
TICK_FILES = sorted((DATA/'lean/equity/usa/tick').glob('*/*.zip'))
MINUTE_FILES = sorted((DATA/'lean/equity/usa/minute').glob('*/*.zip'))
BINANCE_FILES = sorted((DATA/'binance').glob('*.gz'))
NY = ZoneInfo('America/New_York')


def raw_text(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read(z.namelist()[0]).decode('ascii')


def raw_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(raw_text(path))))


def ns_of(day: str, ms: int) -> int:
    "Epoch ns of `ms` after New York midnight, computed with zoneinfo only."
    d = datetime.strptime(day, '%Y%m%d').replace(tzinfo=NY)
    return int(d.timestamp()) * 10**9 + ms * 10**6


def rezip(text: str, dst: Path, member: str = 'data.csv') -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr(member, text)
    return dst


def test_the_bundled_data_has_twenty_tick_files():
    assert len(TICK_FILES) == 20 and len(MINUTE_FILES) > 0 and len(BINANCE_FILES) == 2


# --- integrity on every real file ------------------------------------------------------------------------

@pytest.mark.parametrize('path', TICK_FILES, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_every_tick_file_round_trips_to_the_recorded_text_byte_for_byte(path):
    raw = raw_text(path)
    assert '\r' not in raw  # Lean files use \n; the writer must too
    kind, day = path.stem.split('_')[1], path.stem.split('_')[0]
    assert lean_tick_csv(load_lean_ticks(path), kind, day) == raw


@pytest.mark.parametrize('path', TICK_FILES, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_tick_row_counts_and_one_sided_quotes_match_an_independent_csv_read(path):
    rows, b = raw_rows(path), load_lean_ticks(path)
    day = path.stem.split('_')[0]
    assert len(b) == len(rows)
    assert b['seq'].tolist() == list(range(len(rows)))
    assert b['symbol'][0] == path.parent.name.upper()
    assert b['ts'][0] == ns_of(day, int(rows[0][0])) and b['ts'][-1] == ns_of(day, int(rows[-1][0]))
    if path.stem.endswith('_trade'):
        assert all(len(r) == 6 for r in rows)
        assert b['size'].sum() == sum(int(r[2]) for r in rows)
        assert b['suspicious'].sum() == sum(r[5] == '1' for r in rows)
        assert (b['cond'] == 0x20000020).sum() == sum(r[4] == '20000020' for r in rows)
        return
    is_bid = [r[3] == '0' and r[4] == '0' for r in rows]  # a bid row has zero ask fields
    is_ask = [r[1] == '0' and r[2] == '0' for r in rows]
    assert all(a != b for a, b in zip(is_bid, is_ask))  # every row carries exactly one side
    bids, asks = sum(is_bid), sum(is_ask)
    # bid row then ask row at one timestamp; the 2013-10-07 files open with one lone ask row (04:00), so allow it
    start = 1 if is_ask[0] else 0
    assert bids == asks - start == (len(rows) - start) // 2
    assert all(is_bid[i] and is_ask[i + 1] and rows[i][0] == rows[i + 1][0] for i in range(start, len(rows), 2))
    assert ((b['ask'] == 0) & (b['ask_size'] == 0)).sum() == bids
    assert ((b['bid'] == 0) & (b['bid_size'] == 0)).sum() == asks
    assert b['bid'].max() == max(int(r[1]) for r in rows) * 10**4


@pytest.mark.parametrize('path', MINUTE_FILES, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_every_minute_file_loads_the_recorded_values(path):
    rows, b = raw_rows(path), load_lean_minute(path)
    day = path.stem.split('_')[0]
    assert b.dtype.names[0] == 'ts' and len(b) == len(rows)
    assert b['ts'].tolist() == [ns_of(day, int(r[0])) for r in rows]
    if path.stem.endswith('_trade'):
        assert b['close'].tolist() == [int(r[4]) * 10**4 for r in rows]
        assert b['volume'].tolist() == [float(r[5]) for r in rows]
    else:
        assert b['bid_close'].tolist() == [int(r[4]) * 10**4 for r in rows]
        assert b['ask_size'].tolist() == [float(r[10]) for r in rows]


@pytest.mark.parametrize('path', BINANCE_FILES, ids=lambda p: p.name)
def test_binance_counts_match_the_raw_messages(path):
    trades = tickers = levels = snapshot_levels = 0
    first_trade = None
    for line in gzip.open(path, 'rt'):
        if not line.strip(): continue
        ts, msg = line.split(' ', 1)
        d = json.loads(msg)
        d = d.get('data', d)
        if d.get('e') == 'trade':
            trades += 1
            first_trade = first_trade or (int(ts), d)
        elif d.get('e') == 'depthUpdate': levels += len(d['b']) + len(d['a'])
        elif 'lastUpdateId' in d: snapshot_levels += len(d['bids']) + len(d['asks'])
        elif 'B' in d: tickers += 1
    bn = load_binance(path)
    assert (len(bn['trade']), len(bn['quote']), len(bn['book'])) == (trades, tickers, levels + snapshot_levels)
    assert len(load_binance(path, snapshot=False)['book']) == levels
    t = bn['trade'][0]
    ts, d = first_trade
    assert (t['ts'], t['symbol'], t['venue'], t['size']) == (ts, d['s'].upper(), 'BN', float(d['q']))
    whole, frac = d['p'].split('.')
    assert t['price'] == int(whole) * 10**8 + int(frac.ljust(8, '0'))
    assert bn['book']['seq'].tolist() == list(range(levels + snapshot_levels))


# --- bad input: one clear DataError --------------------------------------------------------------------

def assert_single_error(exc_info):
    e = exc_info.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)  # no chained pandas/zipfile traceback


@pytest.fixture
def trade_zip():
    return DATA/'lean/equity/usa/tick/ibm/20131008_trade.zip'


def test_truncated_zip_names_the_file_and_says_not_a_readable_zip(trade_zip, tmp_path):
    bad = tmp_path/'tick/ibm/20131008_trade.zip'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(trade_zip.read_bytes()[:len(trade_zip.read_bytes()) // 2])
    with pytest.raises(DataError, match='not a readable zip archive') as ei: load_lean_ticks(bad)
    assert str(bad) in str(ei.value)
    assert_single_error(ei)


def test_corrupt_zip_data_is_reported_not_a_zlib_traceback(trade_zip, tmp_path):
    data = bytearray(trade_zip.read_bytes())
    for i in range(2000, 2400): data[i] ^= 0x5A  # scramble compressed bytes; headers stay intact
    bad = tmp_path/'tick/ibm/20131008_trade.zip'
    bad.parent.mkdir(parents=True)
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match='not a readable zip archive') as ei: load_lean_ticks(bad)
    assert_single_error(ei)


def test_truncated_gzip_is_reported(tmp_path):
    src = BINANCE_FILES[0]
    bad = tmp_path/src.name
    bad.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(DataError, match='not a readable gzip file') as ei: load_binance(bad)
    assert_single_error(ei)


def with_line(text: str, lineno: int, new: str, replace: bool = False) -> str:
    lines = text.split('\n')
    lines[lineno - 1:lineno - 1 + replace] = [new]
    return '\n'.join(lines)


@pytest.mark.parametrize('new, replace, expect', [
    ('31669457,1821000,300,P,2000', False, 'line 100: expected 6 columns'),
    ('31669457,1821000,300,P,2000,0,7', True, 'line 100: expected 6 columns'),
    ('31669457,182.10,300,P,2000,0', True, "line 100, field 'price': expected an integer"),
    ('31669457,1821000,300,P,20Z0,0', True, "line 100, field 'condition': expected a hexadecimal"),
    ('31669457,1821000,300,P,2000,2', True, "line 100, field 'suspicious': expected 0 or 1"),
    ('', False, 'line 100: expected 6 columns'),
])
def test_a_malformed_trade_line_is_named_by_line_and_column(trade_zip, tmp_path, new, replace, expect):
    bad = rezip(with_line(raw_text(trade_zip), 100, new, replace), tmp_path/'tick/ibm/20131008_trade.zip')
    with pytest.raises(DataError, match=expect) as ei: load_lean_ticks(bad)
    assert str(bad) in str(ei.value)
    assert_single_error(ei)


def test_a_malformed_first_line_with_extra_columns_everywhere_is_caught(tmp_path):
    # a quote file saved under a trade name: pandas alone would silently drop columns
    quote = DATA/'lean/equity/usa/tick/ibm/20131008_quote.zip'
    bad = rezip(raw_text(quote), tmp_path/'tick/ibm/20131008_trade.zip')
    with pytest.raises(DataError, match='line 1: expected 6 columns'): load_lean_ticks(bad)


def test_a_bad_quote_price_names_the_quote_column(tmp_path):
    quote = DATA/'lean/equity/usa/tick/bac/20131008_quote.zip'
    bad = rezip(with_line(raw_text(quote), 5000, '34200065,x,500,0,0,K,1,0', True), tmp_path/'tick/bac/20131008_quote.zip')
    with pytest.raises(DataError, match="line 5000, field 'bid_price'"): load_lean_ticks(bad)


def real_jsonl_lines(n: int = 30) -> list[dict]:
    rows = raw_rows(DATA/'lean/equity/usa/tick/ibm/20131008_trade.zip')[:n]
    midnight = datetime(2013, 10, 8, tzinfo=NY)
    return [{'symbol': 'IBM', 'timestamp': (midnight + timedelta(milliseconds=int(r[0]))).isoformat(),
             'price': int(r[1]) / 10_000, 'size': int(r[2]), 'bid': int(r[1]) / 10_000 - 0.01,
             'ask': int(r[1]) / 10_000 + 0.01, 'exchange': r[3], 'conditions': r[4]} for r in rows]


def test_jsonl_built_from_real_trades_loads_prices_times_and_prevailing_quotes(tmp_path):
    objs = real_jsonl_lines()
    p = tmp_path/'ibm.jsonl'
    p.write_text('\n'.join(json.dumps(o) for o in objs) + '\n\n')
    out = load_jsonl(p)
    tr, nb = out['trade'], out['nbbo']
    assert len(tr) == len(nb) == len(objs)
    assert tr['price'].tolist() == [round(o['price'] * 10_000) * 10**4 for o in objs]
    assert tr['cond'].tolist() == [int(o['conditions'], 16) for o in objs]
    assert tr['ts'].tolist() == [int(datetime.fromisoformat(o['timestamp']).timestamp() * 1000) * 10**6 for o in objs]
    assert (nb['ask'] - nb['bid']).tolist() == [2 * 10**6] * len(objs)
    assert nb['ts'].tolist() == tr['ts'].tolist() and nb['seq'].tolist() == tr['seq'].tolist()
    assert set(nb['bid_venue']) == {''} and nb['bid_size'].sum() == 0


def test_jsonl_line_missing_price_names_file_line_and_field(tmp_path):
    objs = real_jsonl_lines(10)
    del objs[6]['price']
    p = tmp_path/'ibm.jsonl'
    p.write_text('\n'.join(json.dumps(o) for o in objs))
    with pytest.raises(DataError, match=r"ibm\.jsonl, line 7, field 'price'") as ei: load_jsonl(p)
    assert_single_error(ei)


def test_jsonl_line_numbers_count_blank_lines_and_bad_json_is_named(tmp_path):
    lines = [json.dumps(o) for o in real_jsonl_lines(5)]
    lines[2:2] = ['', '{"symbol": "IBM", "price": 1,']  # blank line 3, broken JSON on line 4
    p = tmp_path/'ibm.jsonl'
    p.write_text('\n'.join(lines))
    with pytest.raises(DataError, match=r'line 4: not valid JSON'): load_jsonl(p)
    lines[3] = json.dumps({'symbol': 'IBM', 'timestamp': 1381239000, 'price': 1, 'size': 1, 'exchange': 'NASDAQ'})
    p.write_text('\n'.join(lines))
    with pytest.raises(DataError, match="line 4, field 'exchange'"): load_jsonl(p)


def test_binance_line_without_receive_time_is_named(tmp_path):
    lines = gzip.open(BINANCE_FILES[0], 'rt').read().split('\n')[:50]
    lines[9] = lines[9].split(' ', 1)[1]
    p = tmp_path/'btcusdt_20240808_spot.gz'
    p.write_bytes(gzip.compress('\n'.join(lines).encode()))
    with pytest.raises(DataError, match='line 10: expected'): load_binance(p)


# --- the catalog -----------------------------------------------------------------------------------------

def test_catalog_lists_every_recorded_file_sorted_with_raw_row_counts():
    t = Catalog(DATA).table()
    assert list(t.columns) == ['symbol', 'date', 'kind', 'format', 'rows', 'path']
    assert list(t.itertuples(index=False)) == sorted(t.itertuples(index=False), key=lambda r: (r.symbol, r.date, r.kind, r.format))
    lean = t[t.format.str.startswith('lean')]
    assert set(map(Path, lean.path)) == set(TICK_FILES) | set(MINUTE_FILES)
    for r in lean[lean.format == 'lean_tick'].itertuples():
        assert r.rows == len(raw_text(Path(r.path)).split('\n'))
    assert set(t[t.format == 'binance'].kind) == {'trade', 'quote', 'book'}


def test_catalog_find_accepts_both_day_spellings_and_lower_case_symbols():
    cat = Catalog(DATA)
    a = cat.find('ibm', '2013-10-08')
    assert a == cat.find('IBM', '20131008') == cat.find('IBM', date(2013, 10, 8))
    assert [s.key for s in a] == ['IBM/2013-10-08/quote', 'IBM/2013-10-08/trade']
    assert isinstance(a[0], Source) and a[0].path.name == '20131008_quote.zip'


def test_catalog_unknown_symbol_lists_available_symbols():
    with pytest.raises(DataError, match="no recorded lean_tick data for 'XYZ'; available symbols: BAC, IBM") as ei:
        Catalog(DATA).find('XYZ', '2013-10-08')
    assert str(DATA) in str(ei.value)


def test_catalog_unknown_date_lists_available_dates():
    with pytest.raises(DataError, match='no lean_tick data for IBM on 2013-10-14; available dates: 2013-10-07, 2013-10-08'):
        Catalog(DATA).find('IBM', '20131014')


def test_catalog_missing_kind_and_bad_day_and_missing_root_are_data_errors(tmp_path):
    with pytest.raises(DataError, match='available kinds: quote, trade'): Catalog(DATA).find('IBM', '2013-10-08', kinds=('book',))
    with pytest.raises(DataError, match='expected YYYY-MM-DD'): Catalog(DATA).find('IBM', '2013/10/08')
    with pytest.raises(DataError, match='data root not found'): Catalog(tmp_path/'nope').sources()


def test_catalog_finds_jsonl_files_per_symbol(tmp_path):
    objs = real_jsonl_lines(4)
    objs[1]['symbol'] = 'bac'
    (tmp_path/'ticks.jsonl').write_text('\n'.join(json.dumps(o) for o in objs))
    srcs = {s.key: s for s in Catalog(tmp_path).sources()}
    assert set(srcs) == {'IBM/2013-10-08/trade', 'IBM/2013-10-08/nbbo', 'BAC/2013-10-08/trade', 'BAC/2013-10-08/nbbo'}
    assert srcs['IBM/2013-10-08/trade'].rows == 3 and srcs['BAC/2013-10-08/trade'].load()['seq'].tolist() == [1]
