"""Alerts name the parameter version that made them (`params`), and alerts written before the field existed still read
everywhere they were kept (an Arrow message, a JSON message, a Parquet catalog part, a ClickHouse table), with
`params` = '' (unknown). `velox run` writes a manifest of its code, data and parameter version beside its outputs."""
import hashlib, json, re, subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from velox.core import Config, clock_ns
from velox.detect.darkpool import DarkPoolParams
from velox.detect.params import detect_stage, params_version
from velox.events import DTYPES
from velox.feeds.parquet import ParquetCatalog
from velox.feeds.recorded import Catalog
from velox.infra.codecs import decode_message, encode_arrow, encode_json
from velox.infra.stores import MIGRATIONS_DDL, Store, ddl
from velox.face.report import report_path, write_report
from velox.runtime.job import run
from velox.runtime.runners import run_frame

ROOT = Path(__file__).resolve().parent.parent
DAY = '2013-10-08'
OLD_FIELDS = [n for n in DTYPES['alert'].names if n != 'params']  # the alert before the field


@pytest.fixture(scope='module')
def alerts():
    "The detect stage's alerts over IBM 10:00-10:30 with a tolerance of 2 bps."
    lo, hi = clock_ns(DAY, '10:00'), clock_ns(DAY, '10:30')
    data = {s.kind: (lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)])(s.load()) for s in Catalog(ROOT / 'replay' / 'data').find('IBM', DAY)}
    a = run_frame(detect_stage({'tolerance_bps': 2.0}), data)['alert']
    assert len(a) > 10
    return a


def expected_version(**given):
    "The version of the darkpool section with every field spelled out: the defaults, then `given`."
    d = DarkPoolParams()
    full = {f.name: getattr(d, f.name) for f in fields(d)} | given
    return params_version({'darkpool': {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}})


def test_detect_stage_alerts_name_the_version_of_their_parameters_defaults_included(alerts):
    assert set(alerts['params'].tolist()) == {expected_version(tolerance_bps=2.0)}
    assert expected_version(tolerance_bps=2.0) != expected_version()  # other values, another version


def as_old(a):
    "Alert rows as the old dtype had them (no params)."
    return a[OLD_FIELDS]


def test_an_arrow_alert_message_written_before_the_field_reads_with_params_unknown(alerts):
    rb = pa.ipc.open_stream(encode_arrow('alert', alerts)).read_next_batch()
    keep = [i for i, f in enumerate(rb.schema) if f.name != 'params']
    old = pa.RecordBatch.from_arrays([rb.column(i) for i in keep], schema=pa.schema([rb.schema.field(i) for i in keep], metadata=rb.schema.metadata))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, old.schema) as w: w.write_batch(old)
    kind, got = decode_message(sink.getvalue().to_pybytes())
    assert kind == 'alert' and (got['params'] == '').all()
    np.testing.assert_array_equal(as_old(got), as_old(alerts))
    assert (decode_message(encode_arrow('alert', alerts))[1] == alerts).all()  # today's message: the field travels


def test_a_json_alert_message_without_params_reads_with_params_unknown(alerts):
    msgs = encode_json('alert', alerts[:5])
    assert orjson.loads(msgs[0])['params'] == alerts['params'][0]
    old = [orjson.dumps({k: v for k, v in orjson.loads(m).items() if k != 'params'}) for m in msgs]
    got = np.concatenate([decode_message(m)[1] for m in old])
    assert (got['params'] == '').all()
    np.testing.assert_array_equal(as_old(got), as_old(alerts[:5]))


def test_a_catalog_part_written_before_the_field_reads_beside_a_new_one(tmp_path, alerts):
    cat = ParquetCatalog(tmp_path / 'cat')
    old, new = alerts[: len(alerts) // 2].copy(), alerts[len(alerts) // 2:].copy()
    new['symbol'] = 'IBMX'
    cat.write('alert', old)
    for p in cat.partition_dir('alert', 'IBM', DAY).glob('*.parquet'):  # rewrite it as the old schema wrote it
        t = pq.read_table(p)
        pq.write_table(t.drop_columns(['params']), p)
    cat.write('alert', new)
    got = cat.read('alert')
    assert len(got) == len(alerts)
    assert (got['params'][got['symbol'] == 'IBM'] == '').all()
    assert set(got['params'][got['symbol'] == 'IBMX'].tolist()) == set(alerts['params'].tolist())
    assert (cat.read('alert', columns=['params'])['params'] == got['params']).all()
    assert cat.read_table('alert').num_rows == len(alerts)


def test_an_alerts_table_made_before_the_field_is_migrated_and_old_rows_read_with_params_unknown(tmp_path, alerts):
    old_ddl = ddl('alert').replace(', params LowCardinality(String)', '')
    assert 'params' not in old_ddl
    with Store(f'chdb://{tmp_path}/chdb') as st:
        st.client.command(MIGRATIONS_DDL)
        st.client.command(old_ddl)
        st.client.insert('schema_migrations', [[1, 2, 3], ['m1', 'm2', 'm3']], column_names=['version', 'name'], column_oriented=True)
        old = alerts[:3]
        st.client.insert('alerts', [old[n].tolist() if old.dtype[n].kind == 'U' else np.ascontiguousarray(old[n]) for n in OLD_FIELDS],
                         column_names=OLD_FIELDS, column_oriented=True)
        st.migrate()
        assert st.newly_applied == [(4, 'alerts name the parameter version that made them')]
        st.insert('alert', alerts[3:6])
        got = st.read('alert')
    assert len(got) == 6
    by_id = {i: p for i, p in zip(got['id'].tolist(), got['params'].tolist())}
    assert [by_id[i] for i in alerts['id'][:6].tolist()] == [''] * 3 + alerts['params'][3:6].tolist()


def test_velox_run_writes_a_manifest_of_its_code_data_and_the_parameter_version_on_its_alerts(tmp_path):
    cfg = Config.load(env={}, data_dir=str(ROOT / 'replay' / 'data'), out_dir=str(tmp_path / 'out'))
    summ, res = run(cfg, ['IBM'], DAY, start='10:00', end='10:10', params={'tolerance_bps': 2.0}, progress=False)
    (path,) = (tmp_path / 'out').glob('manifest-*.json')
    m = json.loads(path.read_text())
    assert path.name == f'manifest-{summ.manifest}.json' and m['id'] == summ.manifest and summ.manifest in summ.text()
    recorded = Catalog(ROOT / 'replay' / 'data').find('IBM', DAY)
    assert sorted((d['kind'], d['sha256']) for d in m['data']) == sorted((s.kind, hashlib.sha256(Path(s.path).read_bytes()).hexdigest()) for s in recorded)
    version = expected_version(tolerance_bps=2.0)
    assert m['params'] == {'darkpool': version} and m['what']['darkpool']['tolerance_bps'] == 2.0
    assert len(res['alert']) and set(res['alert']['params'].tolist()) == {version}
    head = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    assert m['code']['git_commit'] == head
    page = Path(write_report(report_path(cfg.out_dir, summ), summ, res)).read_text(encoding='utf-8')
    assert re.search(r'<h1[^>]*>([^<]*)</h1>', page)[1].endswith(f' · {summ.manifest}')
    assert version in page  # the alerts' hover data carry their version
