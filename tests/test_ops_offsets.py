"""`velox backfill` republishes a window of the Parquet catalog onto the market topics (every row once, counted by an
independent kafka-python consumer); `velox offsets show|reset` reads and moves a consumer group's offsets on a real
broker, checked against what that consumer saw; mistakes are one line, exit status 2."""
import subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from velox.core import clock_ns
from velox.feeds.parquet import ParquetCatalog
from velox.feeds.recorded import Catalog
from velox.infra.codecs import decode_message

pytestmark = [pytest.mark.kafka]
ROOT = Path(__file__).resolve().parent.parent
DAY = '2013-10-08'


def velox(*args, ok=True):
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    if ok: assert r.returncode == 0, f"velox {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def read_all(bootstrap, topic):
    "Every message of `topic`, per partition, with an independent plain consumer (no group)."
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(tps); c.seek_to_beginning(*tps)
    msgs = list(c)
    c.close()
    return msgs


def test_backfill_then_offsets_show_and_reset_a_group(kafka_bootstrap, tmp_path):
    cat = ParquetCatalog(tmp_path / 'catalog')
    srcs = Catalog(ROOT / 'replay' / 'data').find('BAC', DAY)
    for s in srcs: cat.write(s.kind, s.load())
    lo, hi = clock_ns(DAY, '10:00', 't'), clock_ns(DAY, '10:03', 't')
    want = {s.kind: (lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)])(s.load()) for s in srcs}
    bus = ['--bus', f'kafka://{kafka_bootstrap}']
    out = velox('backfill', '--catalog', str(tmp_path / 'catalog'), '--from', DAY, '--symbols', 'BAC', '--start', '10:00', '--end', '10:03',
                '--topic', 'quote=ops.quotes', '--topic', 'trade=ops.trades', '--no-progress', *bus).stdout
    assert f"backfilled {sum(map(len, want.values())):,} events" in out
    per_partition = {}
    for topic, kind in (('ops.quotes', 'quote'), ('ops.trades', 'trade')):
        msgs = [m for m in read_all(kafka_bootstrap, topic)]
        rows = np.concatenate([decode_message(m.value)[1] for m in msgs if m.value])  # no --eos: no control records
        assert np.array_equal(np.sort(rows['ts']), np.sort(want[kind]['ts'])), f'{topic}: not the window of the catalog'
        for m in msgs: per_partition[(topic, m.partition)] = per_partition.get((topic, m.partition), 0) + 1

    def shown():
        lines = velox('offsets', 'show', 'ops-test', '--topic', 'ops.quotes', '--topic', 'ops.trades', *bus).stdout.splitlines()[1:-1]
        return {(w[0], int(w[1])): (w[2], int(w[3]), int(w[4])) for w in map(str.split, lines)}

    before = shown()  # never committed: the lag is every message
    assert {tp: hw for tp, (_, hw, _) in before.items() if hw} == per_partition
    assert all(c == '-' and lag == hw for c, hw, lag in before.values())
    velox('offsets', 'reset', 'ops-test', '--topic', 'ops.quotes', '--topic', 'ops.trades', '--to', 'latest', *bus)
    assert all(c == str(hw) and lag == 0 for c, hw, lag in shown().values())
    velox('offsets', 'reset', 'ops-test', '--topic', 'ops.quotes', '--topic', 'ops.trades', '--to', 'earliest', *bus)
    assert all(c == '0' and lag == hw for c, hw, lag in shown().values())
    velox('offsets', 'reset', 'ops-test', '--topic', 'ops.quotes', '--topic', 'ops.trades', '--to', '2099-01-01T00:00:00Z', *bus)
    assert all(lag == 0 for _, _, lag in shown().values()), 'nothing was written after 2099: the end'


@pytest.mark.parametrize('args, says', [
    (['offsets', 'reset', 'g', '--topic', 'market.trades', '--to', 'yesterday'], "--to 'yesterday': expected earliest, latest or a time"),
    (['offsets', 'reset', 'g', '--topic', 'market.trades'], '--to earliest|latest|TIME is required'),
    (['offsets', 'show', 'g'], 'name the group\'s topics with --topic'),
    (['backfill', '--catalog', '/nonexistent/catalog', '--from', DAY, '--to', '2013-10-01'], 'is before --from'),
    (['backfill', '--catalog', '.', '--from', DAY, '--topic', 'candle=x'], "--topic 'candle=x': expected KIND=TOPIC"),
])
def test_ops_command_mistakes_are_one_line(args, says):
    r = velox(*args, ok=False)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
