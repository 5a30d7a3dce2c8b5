"""The validator on corrupted copies of the real recorded files, on the bus, and through `velox data import`.

Every case writes a copy of a real Lean, Binance or JSON-lines file to tmp_path with one bad value, and asserts the
whole one-line message: the file, the line, the field, what was expected and the value as the file holds it. The
expected lines, values and columns are worked out here from the raw text (zipfile/gzip/json), never by the loaders.
The import cases run the real CLI in a subprocess and count what the store holds afterwards."""
import gzip, json, subprocess, sys, zipfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from velox.core import DataError
from velox.events import batch
from velox.feeds.recorded import load_binance, load_jsonl, load_lean_minute, load_lean_ticks
from velox.feeds.validate import Rows, check_batch, plausible_window
from velox.infra.codecs import CodecError, decode_message, encode_frame, encode_json

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay/data'
TICK = DATA / 'lean/equity/usa/tick'
IBM_TRADES, IBM_QUOTES = TICK / 'ibm/20131008_trade.zip', TICK / 'ibm/20131008_quote.zip'
SPY_BARS = DATA / 'lean/equity/usa/minute/spy/20131008_trade.zip'
BTC = DATA / 'binance/btcusdt_20240808_spot.gz'
NY = ZoneInfo('America/New_York')
PRICE_RULE = 'expected a price > 0 and at most $46,116,860,184'
SIZE_RULE = 'expected a size > 0 and below 2**53'
LINE = 100  # the line each Lean case breaks


def member_and_text(path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(path) as z: return z.namelist()[0], z.read(z.namelist()[0]).decode('ascii')


def lean_copy(tmp_path: Path, src: Path, edit) -> Path:
    "A copy of the Lean zip `src` under tmp_path (same folder layout), its lines passed through `edit(lines)`."
    member, text = member_and_text(src)
    lines = text.split('\n')
    edit(lines)
    dst = tmp_path / src.relative_to(DATA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, '\n'.join(lines).encode('latin-1') if isinstance(lines[0], str) else b'\n'.join(lines))
    return dst


def set_field(lineno: int, col: int, value: str):
    def edit(lines):
        f = lines[lineno - 1].split(','); f[col] = value; lines[lineno - 1] = ','.join(f)
    return edit


def raw_field(path: Path, lineno: int, col: int) -> str:
    return member_and_text(path)[1].split('\n')[lineno - 1].split(',')[col]


def one_line_error(fn, exc=DataError) -> str:
    "The message of the error `fn` raises: one line, no chained traceback."
    with pytest.raises(exc) as ei: fn()
    e = ei.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    assert '\n' not in str(e)
    return str(e)


# --- Lean tick and minute files ----------------------------------------------------------------------------------

def test_a_lean_price_of_ten_to_the_fifteen_is_refused_before_it_wraps_around_int64(tmp_path):
    assert 10**15 * 10**4 > 2**63  # what the loader used to multiply into a negative price
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 1, str(10**15)))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line {LINE}, field 'price': {PRICE_RULE}, got 1000000000000000 ($100,000,000,000)")


def test_a_negative_lean_price_and_a_negative_size_are_refused(tmp_path):
    px, sz = raw_field(IBM_TRADES, LINE, 1), raw_field(IBM_TRADES, LINE, 2)
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 1, f'-{px}'))
    assert one_line_error(lambda: load_lean_ticks(bad)) == f"{bad}, line {LINE}, field 'price': {PRICE_RULE}, got -{px}"
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 2, f'-{sz}'))
    assert one_line_error(lambda: load_lean_ticks(bad)) == f"{bad}, line {LINE}, field 'size': {SIZE_RULE}, got -{sz}"
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 2, '0'))
    assert one_line_error(lambda: load_lean_ticks(bad)) == f"{bad}, line {LINE}, field 'size': {SIZE_RULE}, got 0"


def test_a_time_of_999999999999_ms_in_one_row_is_outside_the_files_day(tmp_path):
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 0, '999999999999'))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line {LINE}, field 'time_ms': expected a time inside 2013-10-08 (America/New_York): "
        "0 <= time_ms < 86,400,000, got 999999999999")


def test_times_going_backwards_name_the_row_and_the_row_before(tmp_path):
    before = int(raw_field(IBM_TRADES, LINE - 1, 0))
    bad = lean_copy(tmp_path, IBM_TRADES, set_field(LINE, 0, str(before - 1)))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line {LINE}, field 'time_ms': expected a time no earlier than line {LINE - 1}'s ({before}), got {before - 1}")


def test_a_zip_with_two_members_is_refused_instead_of_losing_the_second(tmp_path):
    member, text = member_and_text(IBM_TRADES)
    dst = tmp_path / 'lean/equity/usa/tick/ibm/20131008_trade.zip'
    dst.parent.mkdir(parents=True)
    half = len(text.split('\n')) // 2
    with zipfile.ZipFile(dst, 'w') as z:
        z.writestr(member, '\n'.join(text.split('\n')[:half]))
        z.writestr('part2.csv', '\n'.join(text.split('\n')[half:]))
    assert one_line_error(lambda: load_lean_ticks(dst)) == (
        f"{dst}: zip archive has 2 members ({member}, part2.csv): expected one CSV member")


def test_a_truncated_row_names_its_line_and_the_columns_expected(tmp_path):
    bad = lean_copy(tmp_path, IBM_TRADES, lambda lines: lines.__setitem__(LINE - 1, lines[LINE - 1][:12]))
    got = len(member_and_text(IBM_TRADES)[1].split('\n')[LINE - 1][:12].split(','))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line {LINE}: expected 6 columns (time_ms,price,size,exchange,condition,suspicious), got {got}")


def test_a_non_ascii_byte_names_its_line_and_column(tmp_path):
    def edit(lines):
        lines[:] = [l.encode() for l in lines]
        f = lines[LINE - 1].split(b','); f[3] = b'\xff'; lines[LINE - 1] = b','.join(f)
    bad = lean_copy(tmp_path, IBM_TRADES, edit)
    line = member_and_text(IBM_TRADES)[1].split('\n')[LINE - 1]
    col = len(','.join(line.split(',')[:3])) + 2  # 1-based column of the venue field
    assert one_line_error(lambda: load_lean_ticks(bad)) == f"{bad}, line {LINE}: expected ASCII text, got byte 0xff at column {col}"


def test_an_empty_lean_file_is_refused(tmp_path):
    bad = lean_copy(tmp_path, IBM_TRADES, lambda lines: lines.__setitem__(slice(None), ['']))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line 1: empty file: expected rows of time_ms,price,size,exchange,condition,suspicious")


def test_a_quote_side_with_a_size_but_no_price_is_refused(tmp_path):
    _, text = member_and_text(IBM_QUOTES)
    lineno = next(i for i, l in enumerate(text.split('\n'), 1) if l.split(',')[3:5] == ['0', '0'] and i > 50)  # a bid row
    bad = lean_copy(tmp_path, IBM_QUOTES, set_field(lineno, 4, '300'))
    assert one_line_error(lambda: load_lean_ticks(bad)) == (
        f"{bad}, line {lineno}, field 'ask_price': {PRICE_RULE} (or 0 with ask_size 0: no ask), got 0")


def test_a_minute_bar_whose_low_is_above_its_high_is_refused(tmp_path):
    high = raw_field(SPY_BARS, 10, 2)
    bad = lean_copy(tmp_path, SPY_BARS, set_field(10, 3, str(int(high) + 100)))
    assert one_line_error(lambda: load_lean_minute(bad)) == f"{bad}, line 10, field 'low': expected low <= open and close, got {int(high) + 100}"


# --- Binance captures --------------------------------------------------------------------------------------------

def capture_lines() -> list[str]:
    return gzip.open(BTC, 'rt').read().strip().split('\n')


def capture_copy(tmp_path: Path, lines: list, name: str = BTC.name) -> Path:
    p = tmp_path / name
    p.write_bytes(gzip.compress('\n'.join(lines).encode() if isinstance(lines[0], str) else b'\n'.join(lines)))
    return p


def first_of(lines: list, e: str) -> int:
    "0-based index of the first line whose message has event type `e`."
    return next(i for i, l in enumerate(lines) if json.loads(l.split(' ', 1)[1]).get('data', {}).get('e') == e)


def edit_message(lines: list, i: int, **kv) -> list:
    ts, body = lines[i].split(' ', 1)
    msg = json.loads(body); msg['data'].update(kv)
    return lines[:i] + [f"{ts} {json.dumps(msg)}"] + lines[i + 1:]


def test_a_binance_trade_price_of_true_is_refused_not_read_as_one_dollar(tmp_path):
    lines = capture_lines(); i = first_of(lines, 'trade')
    p = capture_copy(tmp_path, edit_message(lines, i, p=True))
    assert one_line_error(lambda: load_binance(p)) == f"{p}, line {i + 1}, field 'p': price true: expected a decimal string"


def test_a_negative_binance_quantity_is_refused(tmp_path):
    lines = capture_lines(); i = first_of(lines, 'trade')
    p = capture_copy(tmp_path, edit_message(lines, i, q='-0.5'))
    assert one_line_error(lambda: load_binance(p)) == f"{p}, line {i + 1}, field 'q': {SIZE_RULE}, got -0.5"


def test_binance_receive_times_going_backwards_are_refused(tmp_path):
    lines = capture_lines(); i = 500
    prev = int(lines[i - 1].split(' ', 1)[0])
    lines[i] = f"{prev - 1} {lines[i].split(' ', 1)[1]}"
    p = capture_copy(tmp_path, lines)
    iso = lambda ns: datetime.fromtimestamp(ns // 10**9, timezone.utc).strftime('%Y-%m-%dT%H:%M:%S') + f".{ns % 10**9:09d}Z"
    assert one_line_error(lambda: load_binance(p)) == (
        f"{p}, line {i + 1}, field 'receive time': expected a time no earlier than line {i}'s ({iso(prev)}), got {iso(prev - 1)}")


def test_a_binance_receive_time_outside_the_captures_days_is_refused(tmp_path):
    lines = capture_lines()
    lines[0] = f"{999999999999 * 10**6} {lines[0].split(' ', 1)[1]}"  # milliseconds written as if nanoseconds
    p = capture_copy(tmp_path, lines)
    assert one_line_error(lambda: load_binance(p)) == (
        f"{p}, line 1, field 'receive time': expected a time inside 2024-08-08 to 2024-08-09 (UTC), got 2001-09-09T01:46:39.999000000Z")


def test_a_depth_update_out_of_sequence_is_refused(tmp_path):
    lines = capture_lines()
    depth = [i for i, l in enumerate(lines) if '"depthUpdate"' in l][:2]
    u0 = json.loads(lines[depth[0]].split(' ', 1)[1])['data']['u']
    p = capture_copy(tmp_path, edit_message(lines, depth[1], U=u0 - 3))
    assert one_line_error(lambda: load_binance(p)) == (
        f"{p}, line {depth[1] + 1}, field 'U': expected an update id above line {depth[0] + 1}'s u = {u0} "
        f"(updates out of order or repeated), got {u0 - 3}")


def test_a_non_utf8_byte_in_a_capture_names_its_line(tmp_path):
    lines = [l.encode() for l in capture_lines()]
    lines[20] = lines[20].replace(b'"s":"BTCUSDT"', b'"s":"BTC\xe9USDT"', 1)
    col = lines[20].index(b'\xe9') + 1
    p = capture_copy(tmp_path, lines)
    assert one_line_error(lambda: load_binance(p)) == f"{p}, line 21: expected UTF-8 text, got byte 0xe9 at column {col}"


# --- JSON lines --------------------------------------------------------------------------------------------------

def jsonl_objects(n: int = 40) -> list[dict]:
    "Real IBM trades of 2013-10-08 as JSON-lines ticks (ISO times in New York)."
    rows = [l.split(',') for l in member_and_text(IBM_TRADES)[1].split('\n')[:n]]
    midnight = datetime(2013, 10, 8, tzinfo=NY)
    return [{'symbol': 'IBM', 'timestamp': (midnight + timedelta(milliseconds=int(r[0]))).isoformat(), 'price': int(r[1]) / 10_000,
             'size': int(r[2]), 'exchange': r[3], 'conditions': r[4]} for r in rows]


def jsonl_file(tmp_path: Path, objs: list, name: str = 'ibm_20131008.jsonl') -> Path:
    p = tmp_path / name
    p.write_text('\n'.join(json.dumps(o) for o in objs) + '\n')
    return p


def test_jsonl_from_real_trades_loads_and_each_bad_value_names_line_and_field(tmp_path):
    objs = jsonl_objects()
    assert len(load_jsonl(jsonl_file(tmp_path, objs))['trade']) == len(objs)
    cases = [({'price': True}, "field 'price': expected a price: a number or a decimal string, got true"),
             ({'price': -1.5}, f"field 'price': {PRICE_RULE}, got -1.5"),
             ({'price': 1e15}, "field 'price': price 1000000000000000.0: expected less than $92,233,720,368 in size (int64 at 1e-8 $)"),
             ({'size': -100}, f"field 'size': {SIZE_RULE}, got -100.0"),
             ({'size': 'many'}, 'field \'size\': expected a number, got "many"'),
             ({'symbol': 7}, "field 'symbol': expected a string of at most 12 characters, got 7"),
             ({'symbol': 'IB M'}, "field 'symbol': expected a symbol: 1-12 printable ASCII characters, no spaces or commas, got 'IB M'"),
             ({'timestamp': 999999999999}, "field 'timestamp': expected a time inside 2013-10-08 (America/New_York), got 2001-09-09T01:46:39.999000000Z")]
    for change, expected in cases:
        bad = [dict(o) for o in objs]; bad[6].update(change)
        p = jsonl_file(tmp_path, bad)
        assert one_line_error(lambda p=p: load_jsonl(p)) == f"{p}, line 7, {expected}", change


def test_jsonl_without_a_day_in_its_name_catches_the_wild_timestamp_by_order(tmp_path):
    objs = jsonl_objects(); objs[6]['timestamp'] = 999999999999  # 2001, after 2013 rows: plausible, but backwards
    p = jsonl_file(tmp_path, objs, 'ticks.jsonl')
    prev = datetime.fromisoformat(objs[5]['timestamp']).astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f') + '000Z'
    assert one_line_error(lambda: load_jsonl(p)) == (
        f"{p}, line 7, field 'timestamp': expected a time no earlier than line 6's ({prev}), got 2001-09-09T01:46:39.999000000Z")


def test_jsonl_with_a_non_utf8_byte_names_its_line(tmp_path):
    p = jsonl_file(tmp_path, jsonl_objects(5))
    lines = p.read_bytes().split(b'\n'); lines[3] = lines[3].replace(b'"IBM"', b'"IB\xffM"'); p.write_bytes(b'\n'.join(lines))
    col = lines[3].index(b'\xff') + 1
    assert one_line_error(lambda: load_jsonl(p)) == f"{p}, line 4: expected UTF-8 text, got byte 0xff at column {col}"


# --- on the bus --------------------------------------------------------------------------------------------------

def real_trades(n: int = 50) -> np.ndarray:
    return load_lean_ticks(IBM_TRADES)[:n]


def test_a_frame_with_one_bad_row_is_a_codec_error_naming_row_and_field():
    tr = real_trades()
    tr['size'][17] = -tr['size'][17]
    assert one_line_error(lambda: decode_message(encode_frame('trade', tr)), CodecError) == (
        f"trade frame, row 18, field 'size': {SIZE_RULE}, got {float(tr['size'][17])!r}")
    q = load_lean_ticks(IBM_QUOTES)[:20]
    q['bid'][4] = 10**19 // 2  # a price beyond what two prices may add up to
    assert one_line_error(lambda: decode_message(encode_frame('quote', q)), CodecError).startswith(
        f"quote frame, row 5, field 'bid': {PRICE_RULE} (or 0 with bid_size 0: no bid), got 50000000000")


def test_a_json_message_with_price_true_is_a_codec_error_not_one_dollar():
    msg = json.loads(encode_json('trade', real_trades(1))[0])
    assert decode_message(json.dumps(msg).encode())[1]['price'][0] == real_trades(1)['price'][0]  # the real message decodes
    msg['price'] = True
    assert one_line_error(lambda: decode_message(json.dumps(msg).encode()), CodecError) == (
        "JSON trade message, field 'price': expected a price: a number or a decimal string, got true")


def test_the_worker_dead_letters_a_bad_frame_with_its_reason_and_keeps_going():
    from velox.detect.params import detect_stage
    from velox.feeds.replay import ArraySource
    from velox.infra.bus import MemoryBus, publish, publish_eos
    from velox.infra.topics import dlq_topic
    from velox.runtime.runners import run_frame
    from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
    from velox.runtime.worker import RunOptions, Worker, WorkerSettings
    q, tr = load_lean_ticks(IBM_QUOTES)[:20_000], load_lean_ticks(IBM_TRADES)
    tr = tr[tr['ts'] <= q['ts'][-1]]
    expected = run_frame(detect_stage(), [ArraySource('quote', 'IBM', q), ArraySource('trade', 'IBM', tr)])['alert']
    assert len(expected) > 0
    bus = MemoryBus()
    publish(bus, 'market.quotes', 'quote', q, rows_per_frame=5000)
    poison = tr[:3].copy(); poison['price'][1] = -poison['price'][1]
    bus.produce('market.trades', encode_frame('trade', poison), key='IBM')  # before the good trades: refused whole
    publish(bus, 'market.trades', 'trade', tr, rows_per_frame=5000)
    for topic in DETECT_INPUTS: publish_eos(bus, topic, ['IBM'])
    w = Worker(detect_stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, 'g', WorkerSettings(collect=('alert',)))
    w.run(RunOptions(until_end=True, max_runtime_s=60))
    np.testing.assert_array_equal(w.collected.result()['alert'], expected)
    with bus.consumer([dlq_topic('market.trades')], 'reader') as c: dead = c.poll(timeout_ms=0, max_records=10)
    assert len(dead) == 1 and dead[0].value == encode_frame('trade', poison)
    assert dead[0].headers['velox-error'].decode() == f"trade frame, row 2, field 'price': {PRICE_RULE}, got {Decimal(int(poison['price'][1])) / 10**8}"


def test_velox_own_market_outputs_pass_the_bus_rules():
    "NBBO, bars and quote bars that velox computes from a real day must never be dead-lettered by its own workers."
    from velox.market.bars import quote_bars, trade_bars
    from velox.market.nbbo import consolidated_nbbo
    q, tr = load_lean_ticks(IBM_QUOTES), load_lean_ticks(IBM_TRADES)
    nb, _ = consolidated_nbbo(q)
    w = plausible_window()
    for kind, b in (('nbbo', nb), ('bar', trade_bars(tr, '1m')), ('bar', trade_bars(tr, '5m', session=None)),
                    ('quote_bar', quote_bars(nb, '1m'))):
        assert len(b) > 50
        check_batch(kind, b, Rows(kind, unit='row'), w)
        decode_message(encode_frame(kind, b[:5000]))


def test_every_bundled_file_passes_and_no_row_is_dropped():
    "The rules refuse nothing that was recorded: each Lean file gives one row per line of its raw text."
    for path in sorted((DATA / 'lean').rglob('*.zip')):
        n = len(member_and_text(path)[1].split('\n'))
        b = load_lean_ticks(path) if '/tick/' in str(path) else load_lean_minute(path)
        assert len(b) == n, path
    for path in sorted((DATA / 'binance').glob('*.gz')):
        assert sum(map(len, load_binance(path).values())) > 0


def test_quote_rules_follow_the_recorded_one_sided_rows():
    "Every recorded quote row carries exactly one side; an empty side is price 0 and size 0 (checked on the raw text)."
    for path in sorted(TICK.glob('*/*_quote.zip')):
        rows = [l.split(',') for l in member_and_text(path)[1].split('\n')]
        sides = [(r[1] != '0') + (r[3] != '0') for r in rows]
        assert set(sides) == {1}, path
        assert all((r[1] == '0') == (r[2] == '0') and (r[3] == '0') == (r[4] == '0') for r in rows), path
    q = batch('quote', ts=[1_381_239_000 * 10**9] * 2, symbol=['IBM'] * 2, bid=[18_000_000_000, 0], bid_size=[100, 0],
              ask=[0, 0], ask_size=[0, 0])
    assert one_line_error(lambda: check_batch('quote', q, Rows('q.csv'))) == (
        "q.csv, line 2, field 'bid': expected a bid or an ask (both sides are empty), got 0")


# --- velox data import: all or nothing ---------------------------------------------------------------------------

def velox(*args):
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], capture_output=True, text=True, cwd=ROOT)


def stored_rows(out: Path) -> dict:
    "What the embedded store under `out` holds, counted by a separate process (chDB opens one folder per process)."
    code = ("import json, sys; from velox.infra.stores import Store; st = Store(sys.argv[1]).migrate(); "
            "print(json.dumps({k: st.count(k) for k in ('trade', 'quote', 'bar', 'quote_bar')}))")
    r = subprocess.run([sys.executable, '-c', code, f'chdb://{out.absolute()}/chdb'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def good_day(root: Path, sym: str = 'ibm', day: str = '20131008'):
    for k in ('trade', 'quote'):
        dst = root / f'lean/equity/usa/tick/{sym}/{day}_{k}.zip'
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((TICK / sym / f'{day}_{k}.zip').read_bytes())


def test_import_of_a_good_day_stores_every_row(tmp_path):
    "The control: the same command and the same count, on good data, store every recorded row."
    good_day(tmp_path / 'data')
    r = velox('data', 'import', '--data-dir', str(tmp_path / 'data'), '--out-dir', str(tmp_path / 'out'), '--no-progress')
    assert r.returncode == 0, r.stderr
    assert stored_rows(tmp_path / 'out') == {'trade': len(member_and_text(IBM_TRADES)[1].split('\n')),
                                             'quote': len(member_and_text(IBM_QUOTES)[1].split('\n')), 'bar': 0, 'quote_bar': 0}


@pytest.mark.parametrize('case', ['price 10**15', 'ts 999999999999', 'time goes back', 'two members', 'bad jsonl'])
def test_import_with_one_bad_source_exits_2_with_one_line_and_stores_nothing(tmp_path, case):
    data = tmp_path / 'data'
    good_day(data, 'ibm', '20131007'); good_day(data, 'bac', '20131008')
    if case == 'price 10**15':
        bad = lean_copy(data, IBM_TRADES, set_field(LINE, 1, str(10**15)))
        expect = f"{bad}, line {LINE}, field 'price': {PRICE_RULE}, got 1000000000000000 ($100,000,000,000)"
    elif case == 'ts 999999999999':
        bad = lean_copy(data, IBM_QUOTES, set_field(LINE, 0, '999999999999'))
        expect = (f"{bad}, line {LINE}, field 'time_ms': expected a time inside 2013-10-08 (America/New_York): "
                  "0 <= time_ms < 86,400,000, got 999999999999")
    elif case == 'time goes back':
        before = int(raw_field(IBM_TRADES, LINE - 1, 0))
        bad = lean_copy(data, IBM_TRADES, set_field(LINE, 0, str(before - 1)))
        expect = f"{bad}, line {LINE}, field 'time_ms': expected a time no earlier than line {LINE - 1}'s ({before}), got {before - 1}"
    elif case == 'two members':
        bad = data / 'lean/equity/usa/tick/ibm/20131008_trade.zip'
        with zipfile.ZipFile(bad, 'w') as z: z.writestr('a.csv', '1,1,1,D,0,0'); z.writestr('b.csv', '2,1,1,D,0,0')
        expect = f"{bad}: zip archive has 2 members (a.csv, b.csv): expected one CSV member"
    else:
        objs = jsonl_objects(10); objs[3]['price'] = True
        bad = jsonl_file(data, objs)
        expect = f"{bad}, line 4, field 'price': expected a price: a number or a decimal string, got true"
    r = velox('data', 'import', '--data-dir', str(data), '--out-dir', str(tmp_path / 'out'), '--no-progress')
    assert (r.returncode, r.stdout) == (2, '')
    assert 'Traceback' not in r.stderr
    assert r.stderr.strip().split('\n') == [f"velox: error: {expect}"]
    assert stored_rows(tmp_path / 'out') == {'trade': 0, 'quote': 0, 'bar': 0, 'quote_bar': 0}  # not even the good days


def test_velox_run_refuses_a_wild_timestamp_instead_of_dropping_alerts(tmp_path):
    "The issue's row (999999999999 ms in one quote row) used to cost `velox run` 536 alerts that run_frame still found."
    data = tmp_path / 'data'
    good_day(data, 'ibm', '20131008')
    bad = lean_copy(data, IBM_QUOTES, set_field(LINE, 0, '999999999999'))
    r = velox('run', '--data-dir', str(data), '--out-dir', str(tmp_path / 'out'), '--symbols', 'IBM', '--no-progress', '--no-report')
    assert (r.returncode, 'Traceback' in r.stderr) == (2, False)
    assert r.stderr.strip().split('\n')[-1] == (f"velox: error: {bad}, line {LINE}, field 'time_ms': expected a time inside "
                                                "2013-10-08 (America/New_York): 0 <= time_ms < 86,400,000, got 999999999999")
