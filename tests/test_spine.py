"""The spine on real recorded data: replay integrity, NBBO against brute force, the outside-NBBO detector against
an independent pandas implementation, the runners agreeing with each other, speed-independence, bad input."""
import subprocess, sys, zipfile
from pathlib import Path
import numpy as np
import pytest
from velox.core import NS, DataError
from velox.feeds.recorded import Catalog, lean_tick_csv
from velox.market.nbbo import consolidated_nbbo
from velox.detect.params import detect_stage
from velox.core import clock_ns
from velox.feeds.replay import Replay
from velox.runtime.runners import run_frame, run_replay
from reference import nbbo_after_each_row, outside_nbbo_pandas, raw_rows

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
CAT = Catalog(DATA)
TICKS = CAT.table().query("format == 'lean_tick'")
SYMBOLS, DAYS = sorted(TICKS['symbol'].unique()), sorted(TICKS['date'].unique())
S = 10**4  # Lean 1/10,000 $ -> velox 1e-8 $


def by_id(a):
    "Alerts in a canonical order (symbol, time, trade, kind) so runs that interleave symbols differently compare equal."
    return a[np.lexsort((a['kind'], a['trade_seq'], a['ts'], a['symbol']))]


def per_symbol(nb):
    "NBBO events grouped by symbol, each symbol's in stream order (the order a stage guarantees)."
    return nb[np.lexsort((np.arange(len(nb)), nb['symbol']))]


@pytest.mark.slow
@pytest.mark.parametrize('day', DAYS)
def test_replayed_stream_resplit_by_source_reproduces_every_recorded_file_exactly(day):
    srcs = [s for sym in SYMBOLS for s in CAT.find(sym, day)]
    got = {s.key: [] for s in srcs}
    last_ts, n = -1, 0
    for src, b in Replay(srcs, chunk_rows=50_000):
        assert b['ts'][0] >= last_ts, 'the replay went back in event time'
        last_ts = int(b['ts'][-1]); n += len(b)
        got[src.key].append(b)
    for s in srcs:
        replayed = np.concatenate(got[s.key])
        with zipfile.ZipFile(s.path) as z: raw = z.read(z.namelist()[0]).decode()
        assert lean_tick_csv(replayed, s.kind, day) == raw, f"{s.path}: replayed rows differ from the file"
    assert n == sum(len(raw_rows(s.path)) for s in srcs)


def test_quotes_come_before_trades_of_the_same_symbol_at_the_same_timestamp():
    srcs = CAT.find('IBM', DAYS[1])
    order = []
    for src, b in Replay(srcs):
        order += [(int(t), src.kind) for t in b['ts']]
    stamps = {}
    for t, k in order: stamps.setdefault(t, []).append(k)
    mixed = [ks for ks in stamps.values() if len(set(ks)) > 1]
    assert mixed, 'the day should have quotes and trades stamped in the same millisecond'
    assert all(ks == sorted(ks, key=lambda k: k != 'quote') for ks in mixed)


@pytest.mark.parametrize('sym', SYMBOLS)
def test_nbbo_matches_brute_force_latest_bid_row_and_latest_ask_row(sym):
    day = DAYS[1]
    q = CAT.find(sym, day, kinds=('quote',))[0]
    rows = raw_rows(q.path)
    state = nbbo_after_each_row(rows)
    nb, _ = consolidated_nbbo(q.load())
    # every NBBO event equals the brute-force state after the row that produced it
    expect = np.array([state[i] for i in nb['seq']], dtype='int64')
    got = np.stack([nb['bid'] // S, nb['bid_size'].astype('int64'), nb['ask'] // S, nb['ask_size'].astype('int64')], axis=1)
    np.testing.assert_array_equal(got, expect)
    # one event per update: a bid row followed by an ask row in the same millisecond is one update
    pairs = sum(1 for a, b in zip(rows, rows[1:]) if a[0] == b[0] and int(a[1]) and not int(a[3]) and int(b[3]) and not int(b[1]))
    assert len(nb) == len(rows) - pairs
    # the state after every update's last row is covered: no update is lost
    assert set(nb['seq'].tolist()) == {i for i in range(len(rows))} - {i for i, (a, b) in enumerate(zip(rows, rows[1:]))
                                                                        if a[0] == b[0] and int(a[1]) and not int(a[3]) and int(b[3]) and not int(b[1])}


@pytest.mark.parametrize('sym,day,bps', [(s, d, b) for s in SYMBOLS for d, b in ((DAYS[1], 0.0), (DAYS[-1], 1.0))])
def test_outside_nbbo_detector_equals_an_independent_pandas_implementation(sym, day, bps):
    srcs = {s.kind: s for s in CAT.find(sym, day)}
    ref = outside_nbbo_pandas(srcs['trade'].path, srcs['quote'].path, day, tolerance_bps=bps)
    al = run_frame(detect_stage({'tolerance_bps': bps}), list(srcs.values()))['alert']
    al = al[al['kind'] == 'outside_nbbo']  # the detect stage also finds block prints and dark volume
    assert len(ref) > 50, 'a real day has prints outside the NBBO'
    assert al['trade_seq'].tolist() == ref['seq'].tolist()
    assert (al['ts'] == ref['ts'].to_numpy()).all()
    assert (al['bid'] == ref['bid'].to_numpy() * S).all() and (al['ask'] == ref['ask'].to_numpy() * S).all()
    assert al['off_exchange'].tolist() == (ref['venue'] == 'D').tolist()


def _window(sym_list, day, start, minutes):
    t0 = clock_ns(day, start, 'start')
    return [s for sym in sym_list for s in CAT.find(sym, day)], t0, t0 + minutes * 60 * NS


def test_notebook_runner_and_replay_runner_give_identical_alerts_on_a_full_day():
    srcs = [s for sym in SYMBOLS for s in CAT.find(sym, DAYS[1])]
    a = run_frame(detect_stage(), srcs)
    b = run_replay(detect_stage(), Replay(srcs, chunk_rows=7_777))
    assert len(a['alert']) > 100
    np.testing.assert_array_equal(by_id(a['alert']), by_id(b['alert']))
    np.testing.assert_array_equal(per_symbol(a['nbbo']), per_symbol(b['nbbo']))


def test_same_alerts_at_max_speed_and_at_50x_on_a_short_window():
    srcs, t0, t1 = _window(SYMBOLS, DAYS[1], '10:00', 0.5)  # 30 s of market time with alerts of 3 kinds: 0.6 s at 50x
    fast = run_replay(detect_stage({'tolerance_bps': 0}), Replay(srcs, start=t0, end=t1))
    paced = Replay(srcs, speed=50, start=t0, end=t1)
    slow = run_replay(detect_stage({'tolerance_bps': 0}), paced)
    assert paced.done == fast.events > 0
    assert len(fast['nbbo']) > 0
    got, want = slow.outputs.get('alert'), fast.outputs.get('alert')
    assert want is not None and len(set(want['kind'])) >= 2, 'the window must have alerts of several kinds to compare'
    assert got is not None, 'the paced replay found no alert'
    np.testing.assert_array_equal(by_id(got), by_id(want))
    np.testing.assert_array_equal(per_symbol(fast['nbbo']), per_symbol(slow['nbbo']))


# --- bad input: one clear error naming the file / line / field, through the CLI a user runs -----------------

def _velox(*args, cwd=ROOT):
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], capture_output=True, text=True, cwd=cwd)


def _copy_day(tmp_path, sym='ibm', day='20131008'):
    d = tmp_path / 'lean' / 'equity' / 'usa' / 'tick' / sym
    d.mkdir(parents=True)
    for k in ('trade', 'quote'):
        (d / f'{day}_{k}.zip').write_bytes((DATA / 'lean/equity/usa/tick' / sym / f'{day}_{k}.zip').read_bytes())
    return d


def test_cli_truncated_zip_names_the_file(tmp_path):
    d = _copy_day(tmp_path)
    f = d / '20131008_trade.zip'
    f.write_bytes(f.read_bytes()[:5000])
    r = _velox('run', '--data-dir', str(tmp_path), '--out-dir', str(tmp_path / 'out'), '--symbols', 'IBM', '--no-progress')
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert '20131008_trade.zip' in r.stderr and 'zip' in r.stderr


def test_cli_malformed_csv_line_names_the_file_line_and_field(tmp_path):
    d = _copy_day(tmp_path)
    f = d / '20131008_trade.zip'
    with zipfile.ZipFile(f) as z: name, text = z.namelist()[0], z.read(z.namelist()[0]).decode()
    lines = text.split('\n'); lines[41] = lines[41].replace(',', ',x', 1)  # price becomes 'x1818900'
    with zipfile.ZipFile(f, 'w') as z: z.writestr(name, '\n'.join(lines))
    r = _velox('run', '--data-dir', str(tmp_path), '--out-dir', str(tmp_path / 'out'), '--symbols', 'IBM', '--no-progress')
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert 'line 42' in r.stderr and 'price' in r.stderr, r.stderr


def test_json_line_missing_price_names_the_file_line_and_field(tmp_path):
    f = tmp_path / 'ticks.jsonl'
    f.write_text('{"symbol":"IBM","timestamp":"2013-10-08T13:30:00Z","price":181.9,"size":100,"bid":181.8,"ask":182.0,"exchange":"D","conditions":"1"}\n'
                 '{"symbol":"IBM","timestamp":"2013-10-08T13:30:01Z","size":100,"bid":181.8,"ask":182.0,"exchange":"N","conditions":"1"}\n')
    from velox.feeds.recorded import load_jsonl
    with pytest.raises(DataError) as e: load_jsonl(f)
    assert 'ticks.jsonl' in str(e.value) and 'line 2' in str(e.value) and "'price'" in str(e.value)


@pytest.mark.parametrize('args,needle', [(('--symbols', 'XYZ'), 'XYZ'), (('--date', '2013-10-14'), '2013-10-14'),
                                         (('--date', '2013-13-45'), 'YYYY-MM-DD'), (('--start', '25:99'), '--start')])
def test_cli_unknown_symbol_date_or_time_is_one_clear_line(tmp_path, args, needle):
    r = _velox('run', '--out-dir', str(tmp_path), '--no-progress', '--no-report', *args)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.startswith('velox: error:') and needle in r.stderr, r.stderr


def test_cli_bad_config_key_names_the_file_and_key(tmp_path):
    cfg = tmp_path / 'v.yaml'
    cfg.write_text('bus: memory://\nbroker: kafka://x\n')
    r = _velox('run', '--config', str(cfg), '--no-progress')
    assert r.returncode == 2 and str(cfg) in r.stderr and "'broker'" in r.stderr, r.stderr


def test_a_lone_bid_update_applies_at_once_whatever_the_chunking_or_runner():
    "Regression: a bid row without an ask partner must move the NBBO before the next trade, in every runner."
    from velox.core import day_start_ns
    from velox.events import batch
    from velox.feeds.replay import ArraySource
    from velox.infra.bus import MemoryBus, publish, publish_eos
    from velox.runtime.worker import RunOptions, Worker, WorkerSettings
    from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
    t = lambda hh, mm, ss=0: day_start_ns(DAYS[1]) + ((hh * 60 + mm) * 60 + ss) * NS
    P = lambda x: int(round(x * 10**8))
    q = batch('quote', ts=[t(10, 0), t(10, 0), t(10, 1), t(10, 5), t(10, 5), t(10, 7), t(10, 7)], symbol=['ZZ'] * 7,
              bid=[P(10), 0, P(10.05), P(10.01), 0, P(10.02), 0], bid_size=[1, 0, 1, 1, 0, 1, 0],
              ask=[0, P(10.10), 0, 0, P(10.10), 0, P(10.10)], ask_size=[0, 1, 0, 0, 1, 0, 1], venue=['N'] * 7, seq=range(7))
    tr = batch('trade', ts=[t(10, 2), t(10, 3), t(10, 3, 30), t(10, 4), t(10, 8)], symbol=['ZZ'] * 5,
               price=[P(10.02), P(10.06), P(10.07), P(10.08), P(10.03)], size=[100] * 5, venue=['D'] * 5, seq=range(5))
    srcs = [ArraySource('quote', 'ZZ', q), ArraySource('trade', 'ZZ', tr)]
    ref = run_frame(detect_stage(), srcs)['alert']
    assert ref['trade_seq'].tolist() == [0]  # 10.02 is below the 10.05 bid set by the lone bid row
    for rows in (1, 2, 3, 4, 1000):
        np.testing.assert_array_equal(run_replay(detect_stage(), Replay(srcs, chunk_rows=rows))['alert'], ref)
    bus = MemoryBus()
    publish(bus, 'market.quotes', 'quote', q[:3], rows_per_frame=1)
    publish(bus, 'market.trades', 'trade', tr, rows_per_frame=1)
    publish(bus, 'market.quotes', 'quote', q[3:], rows_per_frame=1)
    for topic in DETECT_INPUTS: publish_eos(bus, topic, ['ZZ'])
    w = Worker(detect_stage(), bus, DETECT_INPUTS, DETECT_OUTPUTS, 'g', WorkerSettings(max_records=1, collect=('alert',)))
    w.run(RunOptions(until_end=True, max_runtime_s=30))
    np.testing.assert_array_equal(w.collected.result()['alert'], ref)
