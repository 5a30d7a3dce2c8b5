"""The Parquet catalog (velox.feeds.parquet) on real recorded data: `velox data import` of every recorded format into a
catalog and a replay from it gives back the source rows exactly; a day replayed from the catalog gives the alerts of
the Lean zips (in process and through `velox run --data-dir <catalog>`); filtered and column-pruned reads equal numpy
filters of the full data; ClickHouse (chDB) reading the files in place agrees with pandas; `velox data export` of a
stored kind reads back as the rows that went in."""
import gzip, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velox.core import NS, clock_ns
from velox.detect.params import detect_stage
from velox.feeds.parquet import ParquetCatalog, open_catalog
from velox.feeds.recorded import Catalog, lean_tick_csv, read_bytes
from velox.feeds.replay import Replay, WarmReplay
from velox.infra.export import catalog_sql
from velox.runtime.runners import run_replay

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
DAY = '2013-10-08'


def velox(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def copy(src: Path, root: Path) -> Path:
    dst = root / src.relative_to(DATA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def jsonl_day(root: Path) -> Path:
    "A JSON-lines tick file of real IBM trades and quotes of 2013-10-07, 10:00-10:05 New York, in the seed layout, ISO times."
    t0 = clock_ns('2013-10-07', '10:00')
    pick = lambda b: b[(b['ts'] >= t0) & (b['ts'] < t0 + 300 * NS)]
    q, t = (pick(s.load()) for s in Catalog(DATA).find('IBM', '2013-10-07'))
    iso = lambda ts: pd.Timestamp(int(ts), tz='UTC').tz_convert('America/New_York').isoformat()
    rows = [(int(r['ts']), 0, {'symbol': 'IBM', 'timestamp': iso(r['ts']), 'price': f"{r['price'] / 1e8:.4f}", 'size': float(r['size']),
                               'exchange': str(r['venue'])}) for r in t]
    book = {}  # Lean quotes are one-sided: carry the other side forward to make two-sided quotes
    for r in q:
        if r['bid']: book['bid'] = (f"{r['bid'] / 1e8:.4f}", float(r['bid_size']), str(r['venue']))
        if r['ask']: book['ask'] = (f"{r['ask'] / 1e8:.4f}", float(r['ask_size']), str(r['venue']))
        if len(book) == 2:
            (b, bs, bv), (a, as_, av) = book['bid'], book['ask']
            rows.append((int(r['ts']), 1, {'symbol': 'IBM', 'timestamp': iso(r['ts']), 'bid': b, 'ask': a, 'bid_size': bs, 'ask_size': as_,
                                           'bid_venue': bv, 'ask_venue': av, 'price': b, 'size': bs}))
    rows.sort(key=lambda x: (x[0], x[1]))
    p = root / 'ibm_20131007.jsonl'
    p.write_text(''.join(json.dumps(o) + '\n' for _, _, o in rows))
    return p


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
    "A data folder holding one file (or pair) of every recorded format, and the catalog `velox data import` made of it."
    tmp = tmp_path_factory.mktemp('catalog')
    data, cat = tmp / 'data', tmp / 'catalog'
    for k in ('trade', 'quote'): copy(DATA / f'lean/equity/usa/tick/ibm/20131008_{k}.zip', data)
    for k in ('trade', 'quote'): copy(DATA / f'lean/equity/usa/minute/spy/20131008_{k}.zip', data)
    copy(DATA / 'binance/ethusdt_20240808_spot.gz', data)
    jsonl_day(data)
    r = velox('data', 'import', '--format', 'all', '--data-dir', str(data), '--catalog', str(cat), '--out-dir', str(tmp / 'out'), cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return data, cat, r


def test_import_shows_a_progress_bar_and_reports_every_source_exact(imported):
    data, cat, r = imported
    assert 'validate' in r.stderr and 'import' in r.stderr and '100%' in r.stderr, r.stderr[-500:]  # the tqdm bars
    sources = Catalog(data).sources()
    assert {s.fmt for s in sources} == {'lean_tick', 'lean_minute', 'binance', 'jsonl'}
    assert f"{len(sources)} sources" in r.stdout and 'all valid' in r.stdout and ' NO' not in r.stdout, r.stdout
    assert not list(cat.glob('**/.tmp-*'))  # no half-written part left behind


def test_import_catalog_replay_gives_every_recorded_source_back_exactly(imported):
    "Each recorded source, replayed from the catalog, equals the rows its loader reads from the file."
    data, cat, _ = imported
    pc = open_catalog(cat)
    assert isinstance(pc, ParquetCatalog)
    sources = Catalog(data).sources()
    got = {}
    for window in Replay(pc.sources()).windows(ordered=False):  # each source's part of a window as one slice
        for src, b in window: got.setdefault(src.key, []).append(b)
    assert sorted(got) == sorted(s.key for s in sources)
    for s in sources:
        replayed, ref = np.concatenate(got[s.key]), s.load()
        assert replayed.dtype == ref.dtype and len(replayed) == len(ref) > 0, s.key
        assert (replayed == ref).all(), s.key


def test_lean_days_from_the_catalog_write_back_the_recorded_files_byte_for_byte(imported):
    "An independent check: the Lean CSV text of the replayed rows is the recorded file's text."
    data, cat, _ = imported
    pc = ParquetCatalog(cat)
    for s in Catalog(data).sources():
        if s.fmt == 'lean_tick':
            assert lean_tick_csv(pc.find(s.symbol, s.day, s.kind)[0].load(), s.kind, s.day) == read_bytes(s.path).decode(), s.key


def test_binance_capture_in_the_catalog_matches_the_raw_json(imported):
    "Trades of the ETHUSDT capture in the catalog against the capture's own JSON, parsed here with json alone."
    data, cat, _ = imported
    raw = [json.loads(l.split(' ', 1)[1]) for l in gzip.decompress((data / 'binance/ethusdt_20240808_spot.gz').read_bytes()).decode().splitlines() if l.strip()]
    trades = [m.get('data', m) for m in raw if m.get('data', m).get('e') == 'trade']
    got = ParquetCatalog(cat).read('trade', 'ETHUSDT')
    assert len(got) == len(trades) > 0
    assert [f"{p / 1e8:.2f}" for p in got['price'][:50]] == [f"{float(t['p']):.2f}" for t in trades[:50]]
    assert np.allclose(got['size'], [float(t['q']) for t in trades])


def test_a_day_replayed_from_the_catalog_gives_the_alerts_of_the_lean_zips(imported):
    data, cat, _ = imported
    lean, pq = Catalog(data).find('IBM', DAY), ParquetCatalog(cat).find('IBM', DAY)
    a = run_replay(detect_stage(), Replay(lean), collect=('alert', 'nbbo')).outputs
    b = run_replay(detect_stage(), Replay(pq), collect=('alert', 'nbbo')).outputs
    assert len(a['alert']) > 100
    assert (a['alert'] == b['alert']).all() and (a['nbbo'] == b['nbbo']).all()


def test_velox_run_on_the_catalog_prints_the_summary_of_the_zips(imported, tmp_path):
    data, cat, _ = imported
    common = ('run', '--symbols', 'IBM', '--date', DAY, '--start', '10:00', '--end', '10:30', '--no-progress', '--no-report')
    zips = velox(*common, '--data-dir', str(data), '--out-dir', str(tmp_path / 'a'), cwd=tmp_path)
    parq = velox(*common, '--data-dir', str(cat), '--out-dir', str(tmp_path / 'b'), cwd=tmp_path)
    assert zips.returncode == 0 and parq.returncode == 0, (zips.stderr[-2000:], parq.stderr[-2000:])
    keep = lambda out: [l for l in out.splitlines() if 'alert' in l.lower() or 'events' in l.lower() or 'nbbo' in l.lower()]
    strip = lambda ls: [l for l in ls if '/s' not in l and ' s ' not in l]  # rates and timings differ
    assert strip(keep(zips.stdout)) and strip(keep(zips.stdout)) == strip(keep(parq.stdout)), (zips.stdout, parq.stdout)


def test_filtered_and_column_pruned_reads_equal_numpy_filters_of_the_whole(imported):
    data, cat, _ = imported
    pc = ParquetCatalog(cat)
    whole = {s: Catalog(data).find(s, day, 'quote', fmt)[0].load() for s, day, fmt in (('IBM', DAY, 'lean_tick'), ('ETHUSDT', '2024-08-08', 'binance'))}
    lo, hi = clock_ns(DAY, '11:00'), clock_ns(DAY, '11:20')
    got = pc.read('quote', ['IBM', 'ETHUSDT'], lo, hi)
    ref = pd.concat([pd.DataFrame({'ts': b['ts'], 'symbol': s, 'bid': b['bid'], 'seq': b['seq']}) for s, b in sorted(whole.items())])
    ref = ref[(ref['ts'] >= lo) & (ref['ts'] < hi)].sort_values('ts', kind='stable')
    assert got['ts'].tolist() == ref['ts'].tolist() and got['bid'].tolist() == ref['bid'].tolist()
    assert got['symbol'].tolist() == ref['symbol'].tolist() and got['seq'].tolist() == ref['seq'].tolist()
    pruned = pc.read('quote', 'IBM', lo, hi, columns=['ask'])
    assert pruned.dtype.names == ('ts', 'symbol', 'ask') and pruned['ask'].tolist() == got[got['symbol'] == 'IBM']['ask'].tolist()
    assert pc.read('quote', 'XYZ').size == 0 and pc.read('quote', start=hi, end=hi + 1).size == (whole['IBM']['ts'] == hi).sum()
    eth = pc.read('quote', start=int(whole['ETHUSDT']['ts'][100]), end=int(whole['ETHUSDT']['ts'][200]))  # another day, another zone
    assert (eth == whole['ETHUSDT'][(whole['ETHUSDT']['ts'] >= whole['ETHUSDT']['ts'][100]) & (whole['ETHUSDT']['ts'] < whole['ETHUSDT']['ts'][200])]).all() and len(eth) >= 100
    assert pc.days('quote') == ['2013-10-08', '2024-08-08'] and pc.days('nbbo') == ['2013-10-07'] and pc.symbols('trade') == ['ETHUSDT', 'IBM']


def test_chdb_queries_the_parquet_files_in_place_as_pandas_does(imported):
    data, cat, _ = imported
    got = catalog_sql(cat, "SELECT symbol, venue, count() AS n, sum(size) AS volume, min(price) AS low, "
                           "toUnixTimestamp64Nano(max(ts)) AS last FROM {trade} GROUP BY symbol, venue ORDER BY symbol, venue")
    every = [('ETHUSDT', '2024-08-08', 'binance'), ('IBM', '2013-10-07', 'jsonl'), ('IBM', DAY, 'lean_tick')]  # each file's own loader
    frames = [pd.DataFrame({'symbol': s, 'venue': b['venue'], 'size': b['size'], 'price': b['price'], 'ts': b['ts']})
              for s, day, fmt in every for b in [Catalog(data).find(s, day, 'trade', fmt)[0].load()]]
    ref = pd.concat(frames).groupby(['symbol', 'venue']).agg(n=('size', 'size'), volume=('size', 'sum'), low=('price', 'min'),
                                                             last=('ts', 'max')).reset_index()
    assert len(got) == len(ref) > 5
    for c in ('symbol', 'venue', 'n', 'low', 'last'): assert got[c].tolist() == ref[c].tolist(), c
    assert np.allclose(got['volume'], ref['volume'])
    quotes = catalog_sql(cat, "SELECT venue, countIf(bid > 0) AS bids, sum(ask_size) AS ask_shares, max(bid) AS best FROM {quote} "
                              "WHERE symbol = 'IBM' GROUP BY venue ORDER BY venue")
    q = Catalog(data).find('IBM', DAY, 'quote')[0].load()
    qf = pd.DataFrame({'venue': q['venue'], 'bid': q['bid'], 'ask_size': q['ask_size']})
    ref = qf.groupby('venue').agg(bids=('bid', lambda b: int((b > 0).sum())), ask_shares=('ask_size', 'sum'), best=('bid', 'max')).reset_index()
    assert quotes['venue'].tolist() == ref['venue'].tolist() and quotes['bids'].tolist() == ref['bids'].tolist()
    assert quotes['best'].tolist() == ref['best'].tolist() and np.allclose(quotes['ask_shares'], ref['ask_shares'])


def test_export_of_stored_trades_and_alerts_reads_back_as_the_rows_that_went_in(tmp_path):
    "`velox run` stores trades and alerts; `velox data export` writes them to Parquet and CSV; pandas/pyarrow read them back."
    import pyarrow.parquet as pq
    from velox.feeds.arrow import from_arrow
    out = tmp_path / 'out'
    r = velox('run', '--data-dir', str(DATA), '--symbols', 'IBM', '--date', DAY, '--start', '10:00', '--end', '10:30',
              '--no-progress', '--no-report', '--out-dir', str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lo, hi = clock_ns(DAY, '10:00'), clock_ns(DAY, '10:30')
    srcs = Catalog(DATA).find('IBM', DAY)
    ref = run_replay(detect_stage(), WarmReplay(srcs, start=lo, end=hi), collect=('alert',)).outputs['alert']  # as velox run: warm
    trades = srcs[1].load(); trades = trades[(trades['ts'] >= lo) & (trades['ts'] < hi)]
    e1 = velox('data', 'export', 'alerts', '-o', str(tmp_path / 'alerts.parquet'), '--out-dir', str(out), cwd=tmp_path)
    e2 = velox('data', 'export', 'trades', '-o', str(tmp_path / 'trades.csv'), '--symbol', 'IBM', '--days', DAY, '--out-dir', str(out), cwd=tmp_path)
    assert e1.returncode == 0 and e2.returncode == 0, (e1.stderr[-1500:], e2.stderr[-1500:])
    got = from_arrow(pq.read_table(tmp_path / 'alerts.parquet'))[1]
    assert len(ref) > 0 and sorted(got['id'].tolist()) == sorted(ref['id'].tolist())
    by_id = lambda b: b[np.argsort(b['id'])]
    assert (by_id(got) == by_id(ref)).all()
    back = velox('data', 'import', str(tmp_path / 'alerts.parquet'), '--catalog', str(tmp_path / 'cat'), '--no-progress',
                 '--out-dir', str(out), cwd=tmp_path)  # velox's own Parquet needs no mapping
    assert back.returncode == 0, back.stderr[-1500:]
    assert (by_id(ParquetCatalog(tmp_path / 'cat').read('alert')) == by_id(ref)).all()
    df = pd.read_csv(tmp_path / 'trades.csv')
    ts = pd.to_datetime(df['ts'], format='ISO8601', utc=True).to_numpy('datetime64[ns]').view('i8')
    assert len(df) == len(trades) and df['ts'][0].endswith('-04:00')  # New York time, with its offset
    order, ref_order = np.lexsort((df['seq'].to_numpy(), ts)), np.lexsort((trades['seq'], trades['ts']))
    assert ts[order].tolist() == trades['ts'][ref_order].tolist()
    assert np.rint(df['price'].to_numpy()[order] * 1e8).astype('i8').tolist() == trades['price'][ref_order].tolist()
