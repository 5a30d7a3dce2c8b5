"""`velox data import` of data in someone else's layout: real recorded rows written by pandas as CSV and Parquet with
other column names, millisecond or microsecond times, local wall-clock times, prices in dollars or cents, read back
through a mapping file or flags into the Parquet catalog, with the progress bar; the catalog then replays the rows of
the recorded files exactly and gives the same alerts. Also L2 levels with text sides, several symbols in one file,
and the vendor formats (Databento DBN, Tardis CSV) through the same command."""
import os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from velox.detect.params import detect_stage
from velox.feeds.parquet import ParquetCatalog
from velox.feeds.recorded import Catalog, load_binance
from velox.feeds.replay import Replay
from velox.runtime.runners import run_replay

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
VENDOR = ROOT / 'tests' / 'fixtures' / 'vendor'
DAY = '2013-10-08'


def velox(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith('VELOX_')}
    return subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def ny_text(ts: np.ndarray) -> np.ndarray:
    "Epoch ns as New York wall-clock text without an offset, to the nanosecond ('2013-10-08 09:30:00.065000000')."
    local = pd.to_datetime(ts, utc=True).tz_convert('America/New_York').tz_localize(None)
    return np.asarray(local.strftime('%Y-%m-%d %H:%M:%S.') + pd.Series(ts % 10**9).astype(str).str.zfill(9).to_numpy(), object)


@pytest.fixture(scope='module')
def ibm(tmp_path_factory):
    "IBM's recorded quotes and trades of 2013-10-08 written in foreign layouts, imported by the CLI into a catalog."
    tmp = tmp_path_factory.mktemp('generic')
    quotes, trades = (s.load() for s in Catalog(DATA).find('IBM', DAY))
    # trades: CSV, New York wall-clock text, dollars, a broker's column names; read through a YAML mapping file
    pd.DataFrame({'TradeTime': ny_text(trades['ts']), 'Px': trades['price'] / 1e8, 'Shares': trades['size'], 'Mkt': trades['venue'],
                  'CondMask': trades['cond'], 'Suspect': np.where(trades['suspicious'], 'yes', 'no')}).to_csv(tmp / 'ibm_trades.csv', index=False)
    (tmp / 'trades.yaml').write_text(
        "kind: trade\n"
        "columns: {ts: TradeTime, price: Px, size: Shares, venue: Mkt, cond: CondMask, suspicious: Suspect}\n"
        "symbol: IBM\ntime_unit: text\ntime_zone: America/New_York\nprice_scale: 1\n")
    # quotes: Parquet written by pandas, microseconds since the epoch (the recorded times are whole ms), prices in
    # cents as floats (Lean quotes are whole cents here), a symbol column; read through flags alone
    assert not (quotes['bid'] % 10**6).any() and not (quotes['ask'] % 10**6).any()
    pd.DataFrame({'sym': 'ibm', 't_us': quotes['ts'] // 1000, 'bid_c': quotes['bid'] / 1e6, 'bid_qty': quotes['bid_size'],
                  'ask_c': quotes['ask'] / 1e6, 'ask_qty': quotes['ask_size'], 'ex': quotes['venue'], 'c': quotes['cond'],
                  'odd': quotes['suspicious']}).to_parquet(tmp / 'ibm_quotes.parquet')
    cat, out = tmp / 'catalog', tmp / 'out'
    r1 = velox('data', 'import', str(tmp / 'ibm_trades.csv'), '--mapping', str(tmp / 'trades.yaml'), '--catalog', str(cat),
               '--out-dir', str(out), cwd=tmp)
    r2 = velox('data', 'import', str(tmp / 'ibm_quotes.parquet'), '--kind', 'quote', '--columns',
               'ts=t_us,symbol=sym,bid=bid_c,bid_size=bid_qty,ask=ask_c,ask_size=ask_qty,venue=ex,cond=c,suspicious=odd',
               '--time-unit', 'us', '--price-scale', '100', '--catalog', str(cat), '--out-dir', str(out), cwd=tmp)
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert r2.returncode == 0, r2.stderr[-3000:]
    return tmp, cat, quotes, trades, (r1, r2)


def test_cli_import_of_a_csv_with_a_mapping_file_and_of_a_parquet_file_shows_progress(ibm):
    _, cat, quotes, trades, runs = ibm
    for r, n in zip(runs, (len(trades), len(quotes))):
        assert 'validate: 100%' in r.stderr and 'import: 100%' in r.stderr, r.stderr[-800:]  # tqdm bars, to the end
        assert f"{n:,}" in r.stdout and 'all valid' in r.stdout and str(cat) in r.stdout, r.stdout
    assert ParquetCatalog(cat).count('trade', 'IBM', DAY) == len(trades) and ParquetCatalog(cat).count('quote', 'IBM', DAY) == len(quotes)


def test_the_imported_day_replays_as_the_recorded_rows_exactly(ibm):
    _, cat, quotes, trades, _ = ibm
    got = {}
    for window in Replay(ParquetCatalog(cat).find('IBM', DAY)).windows(ordered=False):
        for src, b in window: got.setdefault(src.kind, []).append(b)
    for kind, ref in (('quote', quotes), ('trade', trades)):
        b = np.concatenate(got[kind])
        assert b.dtype == ref.dtype and len(b) == len(ref) and (b == ref).all(), kind


def test_the_imported_day_gives_the_alerts_of_the_lean_zips(ibm):
    _, cat, *_ = ibm
    a = run_replay(detect_stage(), Replay(Catalog(DATA).find('IBM', DAY)), collect=('alert',)).outputs['alert']
    b = run_replay(detect_stage(), Replay(ParquetCatalog(cat).find('IBM', DAY)), collect=('alert',)).outputs['alert']
    assert len(a) > 100 and (a == b).all()


def test_importing_the_same_file_again_keeps_one_copy(ibm):
    tmp, cat, _, trades, _ = ibm
    r = velox('data', 'import', str(tmp / 'ibm_trades.csv'), '--mapping', str(tmp / 'trades.yaml'), '--catalog', str(cat),
              '--no-progress', '--out-dir', str(tmp / 'out'), cwd=tmp)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert ParquetCatalog(cat).count('trade', 'IBM', DAY) == len(trades)


def test_l2_levels_with_text_sides_and_several_symbols_in_one_file(tmp_path):
    "Binance depth levels of two captures in one CSV: UTC ISO text times, 'bid'/'ask' sides, decimal text prices."
    books = [load_binance(DATA / f'binance/{s}_20240808_spot.gz')['book'][:3000] for s in ('btcusdt', 'ethusdt')]
    both = np.concatenate(books); both = both[np.argsort(both['ts'], kind='stable')]
    iso = pd.to_datetime(both['ts'], utc=True).strftime('%Y-%m-%dT%H:%M:%S.') + pd.Series(both['ts'] % 10**9).astype(str).str.zfill(9) + 'Z'
    pd.DataFrame({'pair': np.char.lower(both['symbol']), 'when': iso, 'side': np.where(both['side'] == 1, 'bid', 'ask'),
                  'px': [f"{p / 1e8:.8f}" for p in both['price']], 'amount': both['size'], 'u': both['update_id']}).to_csv(tmp_path / 'l2.csv', index=False)
    (tmp_path / 'l2.yaml').write_text("kind: book\ncolumns: {ts: when, symbol: pair, side: side, price: px, size: amount, update_id: u}\n"
                                      "time_unit: text\n")
    r = velox('data', 'import', str(tmp_path / 'l2.csv'), '--mapping', str(tmp_path / 'l2.yaml'), '--catalog', str(tmp_path / 'c'),
              '--catalog-tz', 'UTC', '--no-progress', '--out-dir', str(tmp_path / 'o'), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    pc = ParquetCatalog(tmp_path / 'c')
    assert pc.symbols('book') == ['BTCUSDT', 'ETHUSDT'] and pc.tz == 'UTC'
    assert pc.days('book') == sorted(set(pd.to_datetime(both['ts'], utc=True).strftime('%Y-%m-%d')))  # UTC dates of the rows
    for ref in books:
        got = pc.read('book', str(ref['symbol'][0]))
        for f in ('ts', 'side', 'price', 'size', 'update_id'): assert got[f].tolist() == ref[f].tolist(), f


def test_vendor_files_go_through_the_same_command(tmp_path):
    "DBN (definitions first: ESU4's trade date is its CME session's) and Tardis CSV, read by their loaders, into the catalog."
    from velox.feeds.databento import load_dbn
    from velox.feeds.tardis import load_tardis
    dbn = [VENDOR / 'databento/futures_definition.dbn.zst', VENDOR / 'databento/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst']
    tardis = [VENDOR / 'tardis/bitmex_trades_XBTUSD.csv', VENDOR / 'tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv']
    r = velox('data', 'import', *map(str, dbn + tardis), '--catalog', str(tmp_path / 'c'), '--out-dir', str(tmp_path / 'o'), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'validate: 100%' in r.stderr
    pc = ParquetCatalog(tmp_path / 'c')
    mbp = load_dbn(dbn[1])
    assert (pc.read('quote', 'ESU4') == mbp['quote']).all() and len(mbp['quote']) > 1000
    assert pc.days('quote') == ['2024-07-02']  # 19:58-20:02 New York on July 1 is the July 2 session
    assert pc.find('ESU4', '2024-07-02', ('quote', 'trade'))
    xbt = load_tardis(tardis[0])['trade']
    assert (pc.read('trade', 'XBTUSD') == xbt).all() and len(xbt) == 10
