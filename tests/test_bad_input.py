"""Bad input, on purpose, through the doors a user has: recorded files of every format, messages on the bus, config
files, command-line flags and services that do not answer. One table per door; each row names the substrings its
one-line message must hold (the file, the line, the field or setting, and what was expected), and every row is checked
the same way: the exit status, no traceback, and nothing stored, written or lost.

The recorded-file rows corrupt a copy of a real file of replay/data in one place; the message rows mix one bad message
into a real window of quotes and trades on the bus and compare the worker's alerts with `run_frame` on the good rows."""
import gzip, json, os, subprocess, sys, zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from velox.core import NS, clock_ns
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.infra.bus import MemoryBus, is_control, publish, publish_eos
from velox.infra.codecs import decode_message, encode_frame
from velox.infra.topics import dlq_topic
from velox.runtime.runners import run_frame
from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
from velox.runtime.worker import RunOptions, Worker

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
TICK = DATA / 'lean/equity/usa/tick'
PLANTED = 'vx-planted-b4d1nput'  # a password set in the environment of every run below: it must appear nowhere


# --- running the command line ------------------------------------------------------------------------------------

def velox(*args, cwd, env=None):
    "The `velox` command in a subprocess, with a clean VELOX_* environment plus `env` and the planted passwords."
    base = {k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}
    secrets = {'VELOX_STORE_PASSWORD': PLANTED, 'VELOX_KAFKA_PASSWORD': PLANTED, 'VELOX_REDIS_PASSWORD': PLANTED}
    env = {**base, **secrets, 'VELOX_CONNECT_TIMEOUT_S': '1', **(env or {})}
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=cwd, capture_output=True, text=True,
                          env={k: v for k, v in env.items() if v is not None}, timeout=300)


def stored_rows(out: Path) -> int:
    "Rows of every table of the embedded store under `out` (0 if there is none), counted by a separate process."
    chdb = out / 'chdb'
    if not chdb.exists(): return 0
    code = ("import sys; from velox.infra.stores import Store, TABLES\n"
            "with Store('chdb://' + sys.argv[1]) as st: print(sum(st.count(k) for k in TABLES))")
    r = subprocess.run([sys.executable, '-c', code, str(chdb)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


def check_refused(r, out: Path, needles, code=2):
    "Exit status `code`, one line `velox: error: ...` holding every needle, no traceback, no password, nothing kept."
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert 'Traceback' not in r.stdout + r.stderr, r.stderr
    assert r.stderr.startswith('velox: error: ') and r.stderr.count('\n') == 1, r.stderr
    for n in needles: assert n in r.stderr, (n, r.stderr)
    assert PLANTED not in r.stdout + r.stderr
    assert stored_rows(out) == 0, 'something was stored'
    assert not list(out.glob('report-*.html')) if out.exists() else True, 'a report was written'


# --- recorded files: corrupted copies of the real ones -----------------------------------------------------------

def lean_copy(data: Path, src: Path, edit):
    "Copy the Lean zip `src` into the data folder `data` (same layout), its text lines passed through `edit(lines)`."
    with zipfile.ZipFile(src) as z: member, text = z.namelist()[0], z.read(z.namelist()[0]).decode('ascii')
    lines = text.split('\n'); edit(lines)
    dst = data / src.relative_to(DATA); dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as z: z.writestr(member, '\n'.join(lines).encode('latin-1'))
    return dst


def field_to(line:int, col:int, value):
    "An edit setting column `col` of line `line` (1-based) to `value` (a function of the old value, or a string)."
    def edit(lines):
        f = lines[line - 1].split(','); f[col] = value(f[col]) if callable(value) else value; lines[line - 1] = ','.join(f)
    return edit


def swap_times(line:int):
    "An edit that moves line `line`'s time one second before the line above it."
    def edit(lines):
        f = lines[line - 1].split(','); f[0] = str(int(lines[line - 2].split(',')[0]) - 1000); lines[line - 1] = ','.join(f)
    return edit


IBM_T, IBM_Q = TICK / 'ibm/20131008_trade.zip', TICK / 'ibm/20131008_quote.zip'
SPY_BARS = DATA / 'lean/equity/usa/minute/spy/20131008_trade.zip'
BTC = DATA / 'binance/btcusdt_20240808_spot.gz'


def two_members(data):
    dst = lean_copy(data, IBM_T, lambda lines: None)
    with zipfile.ZipFile(dst, 'a') as z: z.writestr('extra.csv', b'1,2,3\n')
    return dst


def empty_zip(data):
    dst = data / IBM_T.relative_to(DATA); dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, 'w') as z: z.writestr('20131008_ibm_Trade_Tick.csv', b'')
    return dst


def not_a_zip(data):
    dst = data / IBM_T.relative_to(DATA); dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b'this is not a zip archive\n')
    return dst


def non_ascii(data):
    def edit(lines): lines[99] = lines[99][:5] + '\u00e9' + lines[99][6:]
    return lean_copy(data, IBM_T, edit)


def capture(data, edit):
    "A copy of the BTCUSDT capture with its lines passed through `edit(lines)` (a list of JSON strings)."
    lines = gzip.decompress(BTC.read_bytes()).decode().splitlines()
    edit(lines)
    dst = data / 'binance' / BTC.name; dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(('\n'.join(lines) + '\n').encode()))
    return dst


def first(lines, e):
    "The index of the first line holding a message of type `e` (lines are '<receive time ns> <JSON>')."
    return next(i for i, l in enumerate(lines) if json.loads(l.split(' ', 1)[1]).get('data', {}).get('e') == e)


def capture_edit(e, **changes):
    "Change fields of the first message of type `e`, keeping the line's receive time."
    def edit(lines):
        i = first(lines, e); ts, text = lines[i].split(' ', 1); m = json.loads(text)
        m['data'].update(changes); lines[i] = f'{ts} {json.dumps(m)}'
    return edit


def capture_insert(text):
    "Insert `text` as a message received with the line before it."
    def edit(lines): lines.insert(5, f"{lines[4].split(' ', 1)[0]} {text}")
    return edit


def jsonl(data, change=None, name='ibm_20131008.jsonl'):
    "A JSON-lines file of 40 real IBM trades of 2013-10-08; `change(objs)` edits them."
    tr = Catalog(DATA).find('IBM', '2013-10-08', kinds=('trade',))[0].load()[:40]
    objs = [{'type': 'trade', 'symbol': 'IBM', 'timestamp': int(t['ts']) // 10**6, 'price': float(t['price']) / 1e8,
             'size': float(t['size']), 'exchange': str(t['venue'])} for t in tr]
    if change: change(objs)
    dst = data / name; dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(''.join(json.dumps(o) + '\n' for o in objs))
    return dst


def set7(**kv):
    def change(objs): objs[6].update(kv)
    return change


@dataclass
class FileCase:
    id: str
    make: object  # (data folder) -> the bad file it wrote
    fmt: str  # what `velox data import --format` reads
    needles: tuple  # besides the file's path, which every message names
    line: int | None = None  # the line the message must name


FILES = [
    FileCase('lean price 10**15', lambda d: lean_copy(d, IBM_T, field_to(100, 1, str(10**15))), 'lean_tick',
             ("field 'price'", 'expected a price > 0', 'got 1000000000000000'), 100),
    FileCase('lean negative price', lambda d: lean_copy(d, IBM_T, field_to(100, 1, lambda v: '-' + v)), 'lean_tick',
             ("field 'price'", 'expected a price > 0'), 100),
    FileCase('lean negative size', lambda d: lean_copy(d, IBM_T, field_to(100, 2, '-100')), 'lean_tick',
             ("field 'size'", 'expected a size > 0', 'got -100'), 100),
    FileCase('lean zero size', lambda d: lean_copy(d, IBM_T, field_to(100, 2, '0')), 'lean_tick',
             ("field 'size'", 'expected a size > 0', 'got 0'), 100),
    FileCase('lean time 999999999999 ms', lambda d: lean_copy(d, IBM_T, field_to(100, 0, '999999999999')), 'lean_tick',
             ("field 'time_ms'", '999999999999'), 100),
    FileCase('lean time going backwards', lambda d: lean_copy(d, IBM_T, swap_times(101)), 'lean_tick',
             ("field 'time_ms'", 'line 100'), 101),
    FileCase('lean zip with two members', two_members, 'lean_tick', ('2 members', 'extra.csv', 'expected one CSV member')),
    FileCase('lean truncated row', lambda d: lean_copy(d, IBM_T, lambda l: l.__setitem__(99, ','.join(l[99].split(',')[:3]))),
             'lean_tick', ('expected',), 100),
    FileCase('lean non-ascii byte', non_ascii, 'lean_tick', ('column',), 100),
    FileCase('lean empty file', empty_zip, 'lean_tick', ('empty',)),
    FileCase('lean not a zip', not_a_zip, 'lean_tick', ('zip',)),
    FileCase('lean quote size without price', lambda d: lean_copy(d, IBM_Q, field_to(101, 1, '0')), 'lean_tick', ('bid',), 101),  # line 101 is a bid
    FileCase('lean minute bar low above high', lambda d: lean_copy(d, SPY_BARS, field_to(100, 3, lambda v: str(int(v) * 2))),
             'lean_minute', ('low',), 100),
    FileCase('binance price true', lambda d: capture(d, capture_edit('trade', p=True)), 'binance', ("field 'p'", 'price true: expected a decimal string')),
    FileCase('binance negative quantity', lambda d: capture(d, capture_edit('trade', q='-1.0')), 'binance', ("'q'", '-1.0')),
    FileCase('binance unknown message', lambda d: capture(d, capture_insert(json.dumps({'stream': 'btcusdt@mystery', 'data': {'e': 'mystery'}}))),
             'binance', ("got event type 'mystery'",), 6),
    FileCase('binance not json', lambda d: capture(d, capture_insert('{not json')), 'binance', ('JSON',), 6),
    FileCase('binance line without receive time', lambda d: capture(d, lambda l: l.insert(5, l[4].split(' ', 1)[1])), 'binance',
             ("expected '<receive time ns> <JSON message>'",), 6),
    FileCase('jsonl price true', lambda d: jsonl(d, set7(price=True)), 'jsonl', ("field 'price'", 'true'), 7),
    FileCase('jsonl negative size', lambda d: jsonl(d, set7(size=-5)), 'jsonl', ("field 'size'", '-5'), 7),
    FileCase('jsonl numeric symbol', lambda d: jsonl(d, set7(symbol=123)), 'jsonl', ("field 'symbol'", '123'), 7),
    FileCase('jsonl price 1e15', lambda d: jsonl(d, set7(price=1e15)), 'jsonl', ("field 'price'",), 7),
    FileCase('jsonl time 999999999999 ms', lambda d: jsonl(d, set7(timestamp=999999999999)), 'jsonl', ("field 'timestamp'",), 7),
    FileCase('jsonl missing price', lambda d: jsonl(d, lambda o: o[6].pop('price')), 'jsonl', ("field 'price'", 'missing'), 7),
]


@pytest.mark.parametrize('case', FILES, ids=[c.id for c in FILES])
def test_a_bad_recorded_file_stops_the_import_in_one_line_and_stores_nothing(tmp_path, case):
    data, out = tmp_path / 'data', tmp_path / 'out'
    bad = case.make(data)
    lean_copy(data, IBM_Q if 'quote' not in case.id else IBM_T, lambda l: None)  # a good file beside it: not stored either
    r = velox('data', 'import', '--format', case.fmt, '--data-dir', str(data), '--out-dir', str(out), '--no-progress', cwd=tmp_path)
    check_refused(r, out, (str(bad), *case.needles, *([f'line {case.line}'] if case.line else [])))


def test_the_same_bad_file_stops_velox_run_before_anything_is_stored(tmp_path):
    data, out = tmp_path / 'data', tmp_path / 'out'
    bad = lean_copy(data, IBM_T, field_to(100, 0, '999999999999'))
    lean_copy(data, IBM_Q, lambda l: None)
    r = velox('run', '--symbols', 'IBM', '--date', '2013-10-08', '--data-dir', str(data), '--out-dir', str(out), '--no-progress',
              cwd=tmp_path)
    check_refused(r, out, (str(bad), 'line 100', "field 'time_ms'"))


# --- config files, flags and services ----------------------------------------------------------------------------

@dataclass
class CliCase:
    id: str
    args: tuple
    needles: tuple
    config: str | bytes | None = None  # written to <tmp>/velox.yaml and passed as --config
    env: dict = field(default_factory=dict)  # None: unset (a flag or variable would override the file's value)
    own_out: bool = True  # pass --out-dir (the config case about out_dir must not: the flag would win)


RUN = ('run', '--data-dir', str(DATA), '--symbols', 'IBM', '--no-progress')
CLI = [
    CliCase('config log_level verbose', RUN, ('velox.yaml', 'line 1', "'log_level'", 'verbose', 'expected one of'), 'log_level: verbose\n'),
    CliCase('config out_dir a list', RUN, ('velox.yaml', "'out_dir'", 'not a list'), 'out_dir: [a, b]\n', own_out=False),
    CliCase('config unknown key', RUN, ('velox.yaml', "unknown key 'colour'", 'expected one of'), 'colour: blue\n'),
    CliCase('config not utf-8', RUN, ('velox.yaml', 'not UTF-8'), 'data_dir: "caf\xe9"\n'.encode('latin-1')),
    CliCase('config bad yaml', RUN, ('velox.yaml', 'YAML'), 'bus: [unclosed\n'),
    CliCase('config a secret key', RUN, ('velox.yaml', "'store_password'", 'environment'), f'store_password: {PLANTED}\n'),
    CliCase('config bad bus scheme', RUN, ('velox.yaml', "'bus'", 'kafka://'), 'bus: amqp://x\n'),
    CliCase('config timeout not a number', RUN, ('velox.yaml', "'connect_timeout_s'"), 'connect_timeout_s: soon\n',
            env={'VELOX_CONNECT_TIMEOUT_S': None}),
    CliCase('env bad log level', RUN, ('VELOX_LOG_LEVEL', 'verbose'), env={'VELOX_LOG_LEVEL': 'verbose'}),
    CliCase('missing config file', (*RUN, '--config', 'nowhere.yaml'), ('nowhere.yaml', 'not found')),
    CliCase('speed 1000', (*RUN, '--speed', '1000'), ('--speed', '1000', '0.1 to 100')),
    CliCase('speed not a number', (*RUN, '--speed', 'fast'), ('--speed', 'fast')),
    CliCase('max messages negative', (*RUN, '--max-messages', '-5'), ('--max-messages', '-5')),
    CliCase('start after end', (*RUN, '--start', '10:30', '--end', '10:00'), ('--end 10:00', 'not after --start 10:30')),
    CliCase('start not a time', (*RUN, '--start', '25:00'), ('--start', '25:00', 'HH:MM')),
    CliCase('date not a date', ('run', '--data-dir', str(DATA), '--date', '2013-13-45', '--no-progress'), ('2013-13-45', 'YYYY-MM-DD')),
    CliCase('symbol not recorded', ('run', '--data-dir', str(DATA), '--symbols', 'XYZ', '--no-progress'), ('XYZ',)),
    CliCase('day not recorded', ('run', '--data-dir', str(DATA), '--symbols', 'IBM', '--date', '2013-12-25', '--no-progress'), ('2013-12-25',)),
    CliCase('data dir missing', ('run', '--data-dir', 'no/such/dir', '--no-progress'), ('no/such/dir', 'not found')),
    CliCase('params unknown key', (*RUN, '--params', 'params.yaml'), ('params.yaml', "unknown parameter 'tolerence'")),
    CliCase('unknown command', ('fly',), ("invalid choice: 'fly'",)),
    CliCase('unknown worker stage', ('worker', 'nosuchstage', '--bus', 'memory://'), ("unknown stage 'nosuchstage'",)),
    CliCase('sweep unknown parameter', ('sweep', '--data-dir', str(DATA), '--days', '2013-10-08', '--grid', 'tolerence=1,2'), ("sweep space", "unknown parameter 'tolerence'")),
    CliCase('params promote unknown version', ('params', 'promote', 'p-000000000000', '--at', '2013-10-08 10:15', '--registry', 'reg'), ("no parameter version 'p-000000000000'",), own_out=False),
    CliCase('kafka password in dsn', (*RUN, '--bus', f'kafka://alice:{PLANTED}@127.0.0.1:9092'), ("'bus'", 'alice:***@', 'VELOX_KAFKA_PASSWORD')),
    CliCase('redis password in dsn', (*RUN, '--hot', f'redis://:{PLANTED}@127.0.0.1:6379/0'), ("'hot'", ':***@', 'VELOX_REDIS_PASSWORD')),
    CliCase('store password in dsn', (*RUN, '--store', f'http://default:{PLANTED}@127.0.0.1:8123/db'), ("'store'", ':***@', 'VELOX_STORE_PASSWORD')),
    CliCase('kafka not answering', (*RUN, '--bus', 'kafka://127.0.0.1:1'), ('kafka://127.0.0.1:1', 'no broker answered within 1 s', 'velox services up')),
    CliCase('redis not answering', (*RUN, '--hot', 'redis://127.0.0.1:1/0'), ('redis://127.0.0.1:1/0', 'no Redis server answered within 1 s')),
    CliCase('clickhouse not answering', (*RUN, '--store', 'http://default@127.0.0.1:1/db'), ('http://default@127.0.0.1:1/db', 'no ClickHouse server answered within 1 s')),
]


@pytest.mark.parametrize('case', CLI, ids=[c.id for c in CLI])
def test_a_bad_setting_flag_or_service_is_one_line_with_exit_status_2_and_nothing_kept(tmp_path, case):
    out, args = tmp_path / 'out', list(case.args)
    if case.config is not None:
        cfg = tmp_path / 'velox.yaml'
        (cfg.write_bytes if isinstance(case.config, bytes) else cfg.write_text)(case.config)
        args += ['--config', str(cfg)]
    if '--params' in args: (tmp_path / 'params.yaml').write_text('darkpool:\n  tolerence: 1\n')
    if case.own_out: args += ['--out-dir', str(out)]
    r = velox(*args, cwd=tmp_path, env=case.env)
    check_refused(r, out, case.needles)
    assert not (tmp_path / "['a', 'b']").exists() and not (tmp_path / '.velox').exists()


# --- messages on the bus: one bad message among real ones, nothing lost ------------------------------------------

T0 = clock_ns('2013-10-08', '10:00')
WINDOW = {s.kind: (lambda b: b[(b['ts'] >= T0) & (b['ts'] < T0 + 300 * NS)])(s.load())
          for s in Catalog(DATA).find('IBM', '2013-10-08')}


def good_trades(n=5):
    return WINDOW['trade'][100:100 + n].copy()


def with_field(name, value, n=5):
    b = good_trades(n); b[name][2] = value; return b


def json_trade(**change):
    t = good_trades(1)[0]
    d = {'type': 'trade', 'symbol': 'IBM', 'timestamp': int(t['ts']), 'price': float(t['price']) / 1e8, 'size': float(t['size'])}
    return json.dumps({**d, **change}).encode()


@dataclass
class MsgCase:
    id: str
    value: bytes
    needles: tuple
    key: object = 'IBM'


MESSAGES = [
    MsgCase('frame price negative', encode_frame('trade', with_field('price', -5)), ('trade frame', 'row 3', "'price'")),
    MsgCase('frame size zero', encode_frame('trade', with_field('size', 0)), ('row 3', "'size'")),
    MsgCase('frame time 999999999999 ms', encode_frame('trade', with_field('ts', 999999999999)), ('row 3', "'ts'")),
    MsgCase('frame truncated', encode_frame('trade', good_trades())[:-7], ('frame',)),
    MsgCase('frame of quotes on the trades topic', encode_frame('quote', WINDOW['quote'][:3]), ("'quote'", 'market.trades')),
    MsgCase('frame for another symbol under this key', encode_frame('trade', good_trades()), ('under key',), 'BAC'),
    MsgCase('json price true', json_trade(price=True), ("'price'", 'true')),
    MsgCase('json symbol a number', json_trade(symbol=7), ("'symbol'",)),
    MsgCase('json missing type', json.dumps({'symbol': 'IBM'}).encode(), ("'type'",)),
    MsgCase('json unknown kind', json_trade(type='bogus'), ('bogus',)),
    MsgCase('not json nor frame', b'\x00\x01garbage', ('neither a frame',)),
    MsgCase('json a list', b'[1, 2, 3]', ('list',)),
]


@pytest.mark.parametrize('case', MESSAGES, ids=[c.id for c in MESSAGES])
def test_a_bad_message_goes_to_the_dead_letter_topic_with_its_reason_and_nothing_else_is_lost(case):
    bus = MemoryBus()
    topic_of = {v: k for k, v in DETECT_INPUTS.items()}
    for kind, b in WINDOW.items(): publish(bus, topic_of[kind], kind, b[:len(b) // 2])
    bus.produce('market.trades', case.value, key=case.key)
    for kind, b in WINDOW.items(): publish(bus, topic_of[kind], kind, b[len(b) // 2:])
    for t in DETECT_INPUTS: publish_eos(bus, t, ['IBM'])
    w = Worker(detect_stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, group='bad-input')
    stats = w.run(RunOptions(until_end=True, max_runtime_s=60))
    assert stats.state == 'stopped' and stats.dead_letters == 1
    c = bus.consumer([dlq_topic('market.trades')], 'check'); dead = c.poll(max_records=100); c.close()
    assert len(dead) == 1 and dead[0].value == case.value
    reason = dead[0].headers['velox-error'].decode()
    for n in case.needles: assert n in reason, (n, reason)
    c = bus.consumer(['alerts.darkpool'], 'check')
    got = [decode_message(m.value)[1] for m in c.poll(max_records=10**6) if not is_control(m)]; c.close()
    got = np.concatenate(got) if got else np.zeros(0)
    ref = run_frame(detect_stage(), WINDOW)['alert']
    assert len(ref) > 0 and sorted(got['id'].tolist()) == sorted(ref['id'].tolist())  # every alert of the good rows


def test_the_tables_hold_at_least_forty_bad_inputs_across_every_door():
    assert len(FILES) + len(CLI) + len(MESSAGES) >= 40
    assert {c.fmt for c in FILES} == {'lean_tick', 'lean_minute', 'binance', 'jsonl'}


# --- vendor files: corrupted copies of the real Databento DBN and Tardis CSV samples (tests/fixtures/vendor) ------

VENDOR = ROOT / 'tests' / 'fixtures' / 'vendor'
DBN_TRADES = VENDOR / 'databento' / 'futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst'
TARDIS_L2 = VENDOR / 'tardis' / 'deribit_incremental_book_L2_BTC-PERPETUAL.csv'


def dbn_plain() -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().stream_reader(DBN_TRADES.open('rb')).read()


def dbn_edit(edit, name='trades.dbn'):
    "A plain copy of the real trades DBN file with its bytes passed through `edit(bytearray, first record's offset)`."
    def make(d):
        raw = bytearray(dbn_plain()); start = 8 + int.from_bytes(raw[4:8], 'little')
        edit(raw, start)
        d.mkdir(parents=True, exist_ok=True); (d / name).write_bytes(bytes(raw)); return d / name
    return make


def put(raw, at, value: bytes): raw[at:at + len(value)] = value


def tardis_edit(edit, name=TARDIS_L2.name, gz=False):
    "A copy of the real Deribit incremental L2 CSV with its text passed through `edit(text)`."
    def make(d):
        text = edit(TARDIS_L2.read_text()); d.mkdir(parents=True, exist_ok=True)
        dst = d / (name + ('.gz' if gz else ''))
        dst.write_bytes(gzip.compress(text.encode()) if gz else text.encode()); return dst
    return make


def tardis_line(n, f):
    "An edit of line `n` (1-based) through `f(fields)`."
    def edit(text):
        lines = text.split('\n'); fl = lines[n - 1].split(','); f(fl); lines[n - 1] = ','.join(fl); return '\n'.join(lines)
    return edit


def set_field(k, v):
    def f(fl): fl[k] = v
    return f


def vendor_zst_cut(d):
    d.mkdir(parents=True, exist_ok=True); raw = DBN_TRADES.read_bytes(); (d / DBN_TRADES.name).write_bytes(raw[:len(raw) // 2])
    return d / DBN_TRADES.name


@dataclass
class VendorCase:
    id: str
    make: object  # (folder) -> the bad file it wrote
    load: str  # 'dbn' or 'tardis'
    needles: tuple


VENDOR_FILES = [
    VendorCase('dbn zstd cut in half', vendor_zst_cut, 'dbn', ('truncated zstd stream',)),
    VendorCase('dbn last record cut', dbn_edit(lambda r, s: r.__delitem__(slice(-5, None))), 'dbn',
               ('truncated: record 120 at byte', 'has 43 of its 48 bytes')),
    VendorCase('dbn record length byte wrong', dbn_edit(lambda r, s: put(r, s + 9 * 48, bytes([13]))), 'dbn',
               ('record 10 at byte', 'expected 48 bytes of type 0x00 (trades)')),
    VendorCase('dbn record type byte wrong', dbn_edit(lambda r, s: put(r, s + 9 * 48 + 1, bytes([0xA0]))), 'dbn',
               ('record 10 at byte', 'type 0xa0')),
    VendorCase('dbn not a dbn file', dbn_edit(lambda r, s: put(r, 0, b'PAR1')), 'dbn', ("expected a DBN file",)),
    VendorCase('dbn metadata cut', dbn_edit(lambda r, s: r.__delitem__(slice(40, None))), 'dbn', ('truncated metadata',)),
    VendorCase('dbn price finer than 1e-8', dbn_edit(lambda r, s: put(r, s + 4 * 48 + 16, (5528750000003).to_bytes(8, 'little'))), 'dbn',
               ('record 5', 'price 5528750000003', 'expected a multiple of 10')),
    VendorCase('dbn unknown instrument id', dbn_edit(lambda r, s: put(r, s + 2 * 48 + 4, (999).to_bytes(4, 'little'))), 'dbn',
               ('record 3', 'instrument_id 999', "expected in the file's symbology")),
    VendorCase('dbn trade without a price', dbn_edit(lambda r, s: put(r, s + 6 * 48 + 16, (2**63 - 1).to_bytes(8, 'little'))), 'dbn',
               ('row 7', "field 'price'", 'expected a price > 0')),
    VendorCase('tardis last line cut', tardis_edit(lambda t: t[:-9]), 'tardis', ('line 16', 'truncated')),
    VendorCase('tardis row with three columns', tardis_edit(tardis_line(5, lambda fl: fl.__delitem__(slice(3, None)))), 'tardis',
               ('line 5', '3 columns: expected 8')),
    VendorCase('tardis price not a number', tardis_edit(tardis_line(4, set_field(6, '64x2'))), 'tardis', ('line 4', "field 'price'", '64x2')),
    VendorCase('tardis side neither bid nor ask', tardis_edit(tardis_line(7, set_field(5, 'buy'))), 'tardis',
               ('line 7', "field 'side'", "'bid' or 'ask'")),
    VendorCase('tardis negative amount', tardis_edit(tardis_line(3, set_field(7, '-5'))), 'tardis', ('line 3', "field 'amount'", "'-5'")),
    VendorCase('tardis timestamp in seconds text', tardis_edit(tardis_line(9, set_field(2, '2020-04-01'))), 'tardis',
               ('line 9', "field 'timestamp'", 'microseconds')),
    VendorCase('tardis not a tardis header', tardis_edit(lambda t: 'time,price\n' + t.split('\n', 1)[1]), 'tardis', ('line 1', 'expected a Tardis CSV header')),
    VendorCase('tardis gzip cut', lambda d: (lambda p: (p.write_bytes(p.read_bytes()[:60]), p)[1])(tardis_edit(lambda t: t, gz=True)(d)), 'tardis',
               ('truncated gzip stream',)),
]


@pytest.mark.parametrize('case', VENDOR_FILES, ids=[c.id for c in VENDOR_FILES])
def test_a_bad_vendor_file_is_one_line_naming_the_file_the_place_and_what_was_expected(tmp_path, case):
    from velox.core import DataError
    from velox.feeds.databento import load_dbn
    from velox.feeds.tardis import load_tardis
    bad = case.make(tmp_path / 'data')
    with pytest.raises(DataError) as e: {'dbn': load_dbn, 'tardis': load_tardis}[case.load](bad)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(str(bad)), msg
    for n in case.needles: assert n in msg, (n, msg)


# --- generic import: CSV / Parquet tables through a column mapping, and the Parquet catalog ------------------------

def trades_table(d, edit=None, name='trades.csv'):
    "40 real IBM trades as a broker's CSV (New York wall-clock text, dollars); `edit(DataFrame)` spoils it."
    import pandas as pd
    tr = Catalog(DATA).find('IBM', '2013-10-08', kinds=('trade',))[0].load()[:40]
    when = pd.to_datetime(tr['ts'], utc=True).tz_convert('America/New_York').tz_localize(None).astype(str)
    df = pd.DataFrame({'TradeTime': when, 'Px': (tr['price'] / 1e8).astype(object), 'Shares': tr['size'], 'Mkt': tr['venue']})
    if edit: edit(df)
    d.mkdir(parents=True, exist_ok=True)
    if name.endswith('.parquet'): df.astype({'Px': float}).to_parquet(d / name)
    else: df.to_csv(d / name, index=False)
    return d / name


MAPPING = ('kind: trade\ncolumns: {ts: TradeTime, price: Px, size: Shares, venue: Mkt}\nsymbol: IBM\ntime_unit: text\n'
           'time_zone: America/New_York\n')


def mapped(text=MAPPING, edit=None, name='trades.csv', flags=()):
    "A case's files: the (spoilt) table and the mapping file `text`; the import's arguments."
    def make(d):
        table = trades_table(d, edit, name)
        (d / 'map.yaml').write_text(text)
        return [str(table), '--mapping', str(d / 'map.yaml'), *flags], table, d / 'map.yaml'
    return make


def flags_only(*flags):
    def make(d):
        table = trades_table(d)
        return [str(table), *flags], table, None
    return make


def set_cell(row, col, v):
    def edit(df): df.loc[row, col] = v
    return edit


def spoilt_parquet(cut):
    def make(d):
        table = trades_table(d, name='trades.parquet')
        raw = table.read_bytes(); table.write_bytes(raw[:cut] if cut else b'PAR1 this is not parquet at all PAR1')
        (d / 'map.yaml').write_text(MAPPING)
        return [str(table), '--mapping', str(d / 'map.yaml')], table, d / 'map.yaml'
    return make


@dataclass
class ImportCase:
    id: str
    make: object  # (folder) -> (import arguments, the table file, the mapping file or None)
    needles: tuple  # '{table}' and '{map}' stand for those files' paths


IMPORTS = [
    ImportCase('mapping names a column the file lacks', mapped(MAPPING.replace('price: Px', 'price: Prix')),
               ('{table}', "no column 'Prix'", "'columns.price'", "the file's columns are: TradeTime, Px, Shares, Mkt")),
    ImportCase('mapping without a required field', mapped(MAPPING.replace(', size: Shares', '')),
               ('{map}, line 2', "key 'columns'", 'no column for size', 'a trade needs ts, price, size')),
    ImportCase('mapping field unknown for the kind', mapped(MAPPING.replace('venue: Mkt', 'bid: Mkt')),
               ('{map}', "'columns.bid'", 'a field of a trade')),
    ImportCase('mapping time unit minutes', mapped(MAPPING.replace('time_unit: text', 'time_unit: minutes')),
               ('{map}, line 4', "key 'time_unit'", 'expected one of s, ms, us, ns, text', "'minutes'")),
    ImportCase('mapping time zone unknown', mapped(MAPPING.replace('America/New_York', 'Mars/Olympus')),
               ('{map}, line 5', "key 'time_zone'", 'IANA time zone', "'Mars/Olympus'")),
    ImportCase('mapping price scale not exact', mapped(MAPPING + 'price_scale: 3\n'), ('{map}, line 6', "'price_scale'", 'dividing 100,000,000')),
    ImportCase('mapping unknown key', mapped(MAPPING + 'colour: blue\n'), ('{map}, line 6', "unknown key 'colour'", 'expected one of')),
    ImportCase('mapping not yaml', mapped('kind: [trade\n'), ('{map}', 'not valid YAML')),
    ImportCase('price not a number', mapped(edit=set_cell(10, 'Px', 'abc')), ('{table}', 'line 12', "column 'Px'", 'expected a price (a number)', "'abc'")),
    ImportCase('time not a date-time', mapped(edit=set_cell(3, 'TradeTime', 'yesterday')), ('{table}', 'line 5', "column 'TradeTime'", 'a date-time', "'yesterday'")),
    ImportCase('size negative', mapped(edit=set_cell(7, 'Shares', -100)), ('{table}', 'line 9', "field 'Shares'", 'expected a size > 0')),
    ImportCase('time going backwards', mapped(edit=set_cell(20, 'TradeTime', '2013-10-08 09:00:00')),
               ('{table}', 'line 22', "field 'TradeTime'", 'expected a time no earlier than line 21')),
    ImportCase('csv without a mapping', flags_only(), ('{table}', 'needs a column mapping (--mapping FILE, or --kind and --columns)')),
    ImportCase('columns flag malformed', flags_only('--kind', 'trade', '--columns', 'ts=TradeTime,price'), ('--columns', 'FIELD=COLUMN')),
    ImportCase('time unit flag unknown', flags_only('--kind', 'trade', '--columns', 'ts=TradeTime,price=Px,size=Shares', '--time-unit', 'hours'),
               ('--time-unit', "invalid choice: 'hours'")),
    ImportCase('no symbol anywhere', flags_only('--kind', 'trade', '--columns', 'ts=TradeTime,price=Px,size=Shares', '--time-unit', 'text'),
               ('--symbol', 'no symbol')),
    ImportCase('parquet truncated', spoilt_parquet(-100), ('{table}', 'not a readable Parquet file (truncated or corrupt?)')),
    ImportCase('parquet corrupt', spoilt_parquet(0), ('{table}', 'not a readable Parquet file (truncated or corrupt?)')),
]


def velox_here(*args):
    "The `velox` command run in this process (a mapping is refused before any service or store is opened): like `velox`."
    import contextlib, io
    from types import SimpleNamespace
    from velox.face.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: main(list(args)); code = 0
        except SystemExit as e: code = e.code if isinstance(e.code, int) else 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.parametrize('case', IMPORTS, ids=[c.id for c in IMPORTS])
def test_a_bad_mapping_or_table_stops_the_import_in_one_line_and_writes_nothing(tmp_path, case):
    args, table, mapping = case.make(tmp_path / 'in')
    cat, out = tmp_path / 'catalog', tmp_path / 'out'
    r = velox_here('data', 'import', *args, '--catalog', str(cat), '--no-progress', '--out-dir', str(out))
    check_refused(r, out, [n.format(table=table, map=mapping) for n in case.needles])
    assert not cat.exists() or not list(cat.rglob('*.parquet')), 'the catalog was written'


def test_a_damaged_catalog_part_stops_velox_run_in_one_line(tmp_path):
    from velox.feeds.parquet import ParquetCatalog
    pc = ParquetCatalog(tmp_path / 'catalog')
    for s in Catalog(DATA).find('IBM', '2013-10-08'): pc.write(s.kind, s.load()[:2000], day=s.day)
    part = pc.partition_dir('trade', 'IBM', '2013-10-08') / 'part-00000.parquet'
    part.write_bytes(part.read_bytes()[:-300])
    r = velox('run', '--data-dir', str(tmp_path / 'catalog'), '--symbols', 'IBM', '--no-progress', '--no-report',
              '--out-dir', str(tmp_path / 'out'), cwd=tmp_path)
    check_refused(r, tmp_path / 'out', (str(part), 'not a readable Parquet part of the catalog (truncated or corrupt?)'))


def test_two_recorded_formats_of_one_partition_are_refused_before_the_catalog_is_written(tmp_path):
    data = tmp_path / 'data'
    lean_copy(data, IBM_T, lambda l: None); lean_copy(data, IBM_Q, lambda l: None)
    both = jsonl(data)  # the same IBM trades of 2013-10-08, as JSON lines
    r = velox('data', 'import', '--format', 'all', '--data-dir', str(data), '--catalog', str(tmp_path / 'cat'), '--no-progress',
              '--out-dir', str(tmp_path / 'out'), cwd=tmp_path)
    check_refused(r, tmp_path / 'out', ('IBM/2013-10-08/trade is also recorded in', 'import one format at a time', str(both)))
    assert not list((tmp_path / 'cat').rglob('*.parquet'))
