"""`velox data synth`: a small synthetic session round-trips through the Parquet catalog, and every synthetic symbol
equals its recorded source moved as documented (checked here with pandas on the files themselves, not with the
module's own transform)."""
import functools, json
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from velox.feeds.parquet import ParquetCatalog
from velox.feeds.recorded import Catalog
from velox.feeds.synth import SYNTH_FILE, synth_catalog

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'replay' / 'data'
POOL = [('IBM', '2013-10-08'), ('BAC', '2013-10-08'), ('IBM', '2013-10-09')]


@functools.lru_cache(maxsize=None)
def _load(sym, day, kind): return Catalog(DATA).find(sym, day, kind)[0].load()


def recorded(sym, day, kind, start='10:00', end='10:03'):
    "The recorded rows of one source in the New York window, as pandas (independent of velox.feeds.synth)."
    b = _load(sym, day, kind)
    df = pd.DataFrame({n: b[n] for n in b.dtype.names})
    t = pd.to_datetime(df['ts'], utc=True).dt.tz_convert('America/New_York')
    lo, hi = pd.Timestamp(f"{day} {start}", tz='America/New_York'), pd.Timestamp(f"{day} {end}", tz='America/New_York')
    return df[(t >= lo) & (t < hi)].reset_index(drop=True)


def written(root, kind, sym, day):
    "One partition's rows read straight from its Parquet files with pandas."
    files = sorted((Path(root) / f"kind={kind}" / f"symbol={sym}" / f"date={day}").glob('part-*.parquet'))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    df['ts'] = df['ts'].astype('int64') if df['ts'].dtype.kind == 'i' else df['ts'].dt.tz_convert('UTC').astype('int64')
    return df


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth')
    rep = synth_catalog(Catalog(DATA), ParquetCatalog(root), 8, seed=11, day='2013-10-10', window=('10:00', '10:03'),
                        pool=POOL, jitter_s=120, progress=False)
    return root, rep


def test_synth_round_trips_and_every_symbol_is_its_source_moved(session):
    root, rep = session
    manifest = json.loads((root / SYNTH_FILE).read_text())
    assert manifest['synthetic'] and len(manifest['symbols']) == 8 == rep.symbols
    assert ParquetCatalog(root).symbols() == [f"SYN{i:05d}" for i in range(8)]
    total = {'quote': 0, 'trade': 0}
    for m in manifest['symbols']:
        assert (m['source'], m['source_day']) in POOL and m['day'] == '2013-10-10' and 8 <= m['price_num'] <= 64
        moved = (pd.Timestamp('2013-10-10', tz='America/New_York') - pd.Timestamp(m['source_day'], tz='America/New_York')).value
        assert abs(m['shift_ns'] - moved) <= 120 * 10**9
        for kind, prices in (('quote', ['bid', 'ask']), ('trade', ['price'])):
            meta = json.loads((root / f"kind={kind}" / f"symbol={m['symbol']}" / "date=2013-10-10" / SYNTH_FILE).read_text())
            assert meta['synthetic'] and meta['source'] == m['source'] and meta['shift_ns'] == m['shift_ns']
            src, got = recorded(m['source'], m['source_day'], kind), written(root, kind, m['symbol'], '2013-10-10')
            assert len(got) == len(src) > 0
            total[kind] += len(got)
            assert (got['symbol'].astype(str) == m['symbol']).all()
            np.testing.assert_array_equal(got['ts'].to_numpy(), src['ts'].to_numpy() + m['shift_ns'])
            read = ParquetCatalog(root).read(kind, m['symbol'])  # the catalog's reader gives the same integers back
            for p in prices:
                want = np.floor(src[p].to_numpy().astype(float) * m['price_num'] / 16 + 0.5).astype('int64')
                np.testing.assert_array_equal(read[p], want)
            for c in ['size'] if kind == 'trade' else ['bid_size', 'ask_size']:
                np.testing.assert_array_equal(read[c], src[c].to_numpy())
            np.testing.assert_array_equal(read['venue'], src['venue'].to_numpy())
            np.testing.assert_array_equal(read['seq'], src['seq'].to_numpy())
    assert total == rep.rows


def test_synth_is_deterministic_by_seed(session, tmp_path):
    root, _ = session
    again = synth_catalog(Catalog(DATA), ParquetCatalog(tmp_path / 'a'), 8, seed=11, day='2013-10-10', window=('10:00', '10:03'),
                          pool=POOL, jitter_s=120, progress=False)
    assert json.loads((tmp_path / 'a' / SYNTH_FILE).read_text())['symbols'] == json.loads((root / SYNTH_FILE).read_text())['symbols']
    a, b = ParquetCatalog(root).read('trade'), ParquetCatalog(tmp_path / 'a').read('trade')
    np.testing.assert_array_equal(a, b)
    assert again.rows['trade'] == len(a)


def test_velox_data_synth_writes_a_catalog_and_says_bad_times_in_one_line(tmp_path, capsys, monkeypatch):
    from velox.face.cli import main
    monkeypatch.chdir(ROOT)
    main(['data', 'synth', '--catalog', str(tmp_path / 'c'), '-n', '3', '--start', '10:00', '--end', '10:01', '--no-progress'])
    assert '3 synthetic symbols' in capsys.readouterr().out
    assert ParquetCatalog(tmp_path / 'c').symbols() == ['SYN00000', 'SYN00001', 'SYN00002']
    with pytest.raises(SystemExit) as e:
        main(['data', 'synth', '--catalog', str(tmp_path / 'd'), '-n', '3', '--start', '25:00', '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and '25:00' in err, err
