"""Acceptance: a process that is not velox reads what a velox worker fleet wrote.

Two detect workers in one consumer group run on a real Kafka-protocol broker over a few minutes of IBM and BAC
(2013-10-08). Then a subprocess whose code imports only `confluent_kafka` and `pyarrow` (Arrow codec) or only
`confluent_kafka` and `json` (JSON codec) — never velox — reads `alerts.darkpool` and `market.nbbo`: it skips control
records by their header alone, converts prices and times with nothing but the schema's metadata (Arrow) or the
documented JSON form (velox/schemas/), and prints what it read. Its outside-NBBO alerts equal the independent pandas
reference of the spine tests (tests/reference.py) on the same rows, and its NBBO equals the brute-force quote state.
"""
import json, subprocess, sys, threading, time, uuid, zipfile
from pathlib import Path
import pytest
from reference import midnight_ns, nbbo_after_each_row, outside_nbbo_pandas, raw_rows
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.infra.bus import publish, publish_eos
from velox.infra.kafka_bus import KafkaBus
from velox.infra.services import start_broker
from velox.infra.topics import dlq_topic
from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
from velox.runtime.worker import RunOptions, Worker, WorkerSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DAY, SYMBOLS, START_MS, END_MS = '2013-10-08', ('IBM', 'BAC'), 10 * 3_600_000, 10 * 3_600_000 + 4 * 60_000  # 10:00-10:04 New York

# What the outside process runs: only the Kafka client and pyarrow (or json) -- no velox anywhere.
READER = r'''
import sys, json
from decimal import Decimal
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING, KafkaError
CODEC, BOOTSTRAP = sys.argv[1], sys.argv[2]
if CODEC == 'arrow': import pyarrow as pa

def ns_from_iso(s):  # '2013-10-08T14:00:00.123456789Z' -> epoch ns, without any library
    from datetime import datetime, timezone
    day, frac = s.rstrip('Z').split('.')
    sec = datetime.strptime(day, '%Y-%m-%dT%H:%M:%S').replace(tzinfo=timezone.utc).timestamp()
    return int(sec) * 10**9 + int(frac.ljust(9, '0'))

def read(topic):
    "Every record of every partition of `topic`, from the beginning to the end, in partition order."
    c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'outside-reader', 'enable.auto.commit': False,
                  'enable.partition.eof': True})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, eof = [], set()
    while len(eof) < len(parts):
        m = c.poll(5.0)
        if m is None: continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF: eof.add(m.partition()); continue
            raise SystemExit(f'kafka error: {m.error()}')
        out.append(m)
    c.close()
    return out

def rows(topic):
    "The data rows of `topic` as dicts: prices in dollars (Decimal as text), times in epoch ns."
    got, skipped = [], 0
    for m in read(topic):
        headers = dict(m.headers() or [])
        if 'velox-control' in headers: skipped += 1; continue  # control records (end of stream): skipped by header alone
        if CODEC == 'arrow':
            tbl = pa.ipc.open_stream(m.value()).read_all()  # the schema travels with the message
            cols = {}
            for f in tbl.schema:
                meta, col = f.metadata or {}, tbl.column(f.name)
                if meta.get(b'velox.type') == b'price':
                    scale = Decimal(meta[b'velox.scale'].decode()); cols[f.name] = [str(Decimal(v) * scale) for v in col.to_pylist()]
                elif pa.types.is_timestamp(f.type): cols[f.name] = col.cast(pa.int64()).to_pylist()
                else: cols[f.name] = col.to_pylist()
            got += [dict(zip(cols, r)) for r in zip(*cols.values())]
        else:
            assert headers.get('velox-codec') == b'json', headers
            d = json.loads(m.value())  # one event, the documented JSON form (velox/schemas/<kind>.json)
            d['ts'] = ns_from_iso(d.pop('timestamp'))
            got.append(d)
    return got, skipped

alerts, a_skip = rows('alerts.darkpool')
nbbo, n_skip = rows('market.nbbo')
assert 'velox' not in sys.modules and not any(k.startswith('velox') for k in sys.modules), 'the reader imported velox'
print(json.dumps({'alerts': alerts, 'nbbo': nbbo, 'skipped': a_skip + n_skip, 'modules': sorted(k for k in sys.modules if '.' not in k)}))
'''


def window_rows(path):
    "The raw CSV rows of a Lean zip inside the window, and the index of the first."
    rows = raw_rows(path)
    idx = [i for i, r in enumerate(rows) if START_MS <= int(r[0]) < END_MS]
    return rows[idx[0]:idx[-1] + 1], idx[0]


def write_zip(path, rows):
    with zipfile.ZipFile(path, 'w') as z: z.writestr(path.stem + '.csv', ''.join(','.join(r) + '\n' for r in rows))
    return path


@pytest.fixture(scope='module')
def day_window():
    "Per symbol: velox's batches of the window, and the window's raw rows (with the index of their first row)."
    t0 = midnight_ns(DAY)
    out = {}
    for sym in SYMBOLS:
        srcs = {s.kind: s for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)}
        b = {k: s.load() for k, s in srcs.items()}
        b = {k: v[(v['ts'] >= t0 + START_MS * 10**6) & (v['ts'] < t0 + END_MS * 10**6)] for k, v in b.items()}
        out[sym] = (b, {k: window_rows(s.path) for k, s in srcs.items()})
    return out


def run_fleet(bootstrap, codec, data, tmp_path):
    "Two detect workers in one group write outputs in `codec`; inputs are published (in `codec`) once both joined."
    params = tmp_path / 'params.yaml'
    params.write_text('darkpool:\n  tolerance_bps: 0\n')  # alert on any print outside the NBBO, as the reference does
    from velox.detect.params import load_params
    group, stop = f'outside-{uuid.uuid4().hex[:6]}', tmp_path / f'stop-{codec}'
    kw = dict(session_timeout_ms=6000, heartbeat_interval_ms=1000)
    bus = KafkaBus(bootstrap, **kw)
    bus.create_topics([*DETECT_INPUTS, *DETECT_OUTPUTS.values(), *map(dlq_topic, DETECT_INPUTS)])  # before anyone uses them
    workers = [Worker(detect_stage(load_params(params)), KafkaBus(bootstrap, **kw), DETECT_INPUTS, DETECT_OUTPUTS, group,
                      WorkerSettings(codec=codec, client_id=f'member-{i}')) for i in range(2)]
    threads = [threading.Thread(target=w.run, args=(RunOptions(stop_file=str(stop), max_runtime_s=300),), daemon=True) for w in workers]
    for t in threads: t.start()
    deadline = time.monotonic() + 120
    while not all(len(w.owned.assigned) == 6 for w in workers):  # 3 partitions of each input topic each: joined
        assert time.monotonic() < deadline and all(t.is_alive() for t in threads), [w.stats for w in workers]
        time.sleep(0.2)
    topic_of = {k: t for t, k in DETECT_INPUTS.items()}
    for b in data.values():
        for kind, rows in b.items(): publish(bus, topic_of[kind], kind, rows, codec=codec, rows_per_frame=512)
    for t in DETECT_INPUTS: publish_eos(bus, t, list(data))
    bus.flush(); bus.close()
    deadline = time.monotonic() + 240
    while not all(w.owned.assigned and w.ends.announced == frozenset(w.owned.assigned) for w in workers):
        assert time.monotonic() < deadline and all(t.is_alive() for t in threads), [w.stats for w in workers]
        time.sleep(0.2)
    stop.touch()
    for t in threads: t.join(60)
    assert all(w.stats.state == 'stopped' and w.stats.dead_letters == 0 for w in workers), [w.stats for w in workers]
    return workers


@pytest.mark.parametrize('codec', ['arrow', 'json'])
def test_an_outside_process_reads_the_fleets_alerts_and_nbbo_with_only_kafka_and_arrow_or_json(codec, day_window, tmp_path):
    assert 'import velox' not in READER and 'from velox' not in READER  # the reader's code: Kafka client, pyarrow, json
    with start_broker(state_dir=tmp_path / 'broker') as broker:
        bootstrap = broker.dsn.split('://')[1]
        workers = run_fleet(bootstrap, codec, {s: b for s, (b, _) in day_window.items()}, tmp_path)
        script = tmp_path / 'reader.py'
        script.write_text(READER)
        p = subprocess.run([sys.executable, str(script), codec, bootstrap], capture_output=True, text=True, timeout=180,
                           cwd=tmp_path, env={'PATH': '/usr/bin:/bin'})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    assert not {m for m in got['modules'] if m.startswith('velox')}
    assert got['skipped'] > 0  # the end-of-stream markers were there, and skipped by header
    assert sum(w.stats.produced.get('alert', 0) for w in workers) == len(got['alerts'])  # exactly once, none twice

    for sym, (_, raw) in day_window.items():
        (qrows, q0), (trows, t0) = raw['quote'], raw['trade']
        # alerts: the outside-NBBO ones equal the pandas reference on the same rows
        ref = outside_nbbo_pandas(write_zip(tmp_path / f'{sym}_trade.zip', trows), write_zip(tmp_path / f'{sym}_quote.zip', qrows), DAY)
        mine = sorted((a for a in got['alerts'] if a['symbol'] == sym and a['kind'] == 'outside_nbbo'), key=lambda a: a['trade_seq'])
        assert len(ref) > 0
        assert [a['trade_seq'] - t0 for a in mine] == ref['seq'].tolist()
        assert [a['ts'] for a in mine] == ref['ts'].tolist()
        dollars = lambda v: round(float(v) * 10_000)  # the reference keeps Lean's 1/10,000 $
        assert [dollars(a['price']) for a in mine] == ref['price'].tolist()
        assert [dollars(a['bid']) for a in mine] == ref['bid'].astype('int64').tolist()
        assert [dollars(a['ask']) for a in mine] == ref['ask'].astype('int64').tolist()
        venue = 'exchange' if codec == 'json' else 'venue'
        assert [a[venue] for a in mine] == ref['venue'].tolist()
        # NBBO: every update equals the brute-force quote state after the row that made it
        state = nbbo_after_each_row(qrows)
        nb = sorted((n for n in got['nbbo'] if n['symbol'] == sym), key=lambda n: n['seq'])
        assert len(nb) > 100
        assert [(dollars(n['bid']), int(n['bid_size']), dollars(n['ask']), int(n['ask_size'])) for n in nb] == \
               [state[n['seq'] - q0] for n in nb]
        assert all(midnight_ns(DAY) + START_MS * 10**6 <= n['ts'] < midnight_ns(DAY) + END_MS * 10**6 for n in nb)
