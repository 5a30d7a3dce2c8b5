"""The second Kafka client (confluent-kafka / librdkafka) against the real broker: it puts every key where kafka-python and
`partition_for` put it (2,000 symbols), it passes the bus contract tests of tests/test_bus.py, its consumer pauses,
resumes resumes without losing a message, and a detect worker on either client, fed by the
other, gives the notebook runner's alerts on a real window."""
import random, string, threading, time
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
from bus_util import fresh_topic, read_topic
from conftest import KAFKA_TEST_KW
import test_bus as contract
from velox.core import clock_ns
from velox.detect.params import detect_stage
from velox.feeds.recorded import Catalog
from velox.feeds.replay import Replay
from velox.infra.bus import is_control, partition_for, publish, publish_eos
from velox.infra.codecs import decode_message
from velox.infra.connect import bus_from_dsn
from velox.infra.topics import TopicSpec
from velox.runtime.runners import run_frame

pytestmark = pytest.mark.kafka
pytest.importorskip('confluent_kafka')
from velox.infra.confluent_bus import ConfluentBus  # noqa: E402

KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'


@pytest.fixture
def cbus(kafka_bootstrap):
    b = ConfluentBus(kafka_bootstrap, **KAFKA_TEST_KW)
    yield b
    b.close()


def symbols(n=2000, seed=7):
    "`n` distinct ticker-like keys: 1-6 letters, some with '.', '-', digits or non-ASCII letters (as UTF-8 on the wire)."
    rng, out = random.Random(seed), {'BRK.B', 'BF-B', 'ÄRZTE', 'Ω1', 'IBM', 'BAC', 'A'}
    while len(out) < n:
        s = ''.join(rng.choices(string.ascii_uppercase, k=rng.randint(1, 6)))
        r = rng.random()
        out.add(s + '.' + rng.choice('ABW') if r < .1 else s + str(rng.randint(0, 99)) if r < .2 else s)
    return sorted(out)


@pytest.mark.parametrize('partitions', [6, 7])
def test_kafka_python_confluent_and_partition_for_put_each_of_2000_symbols_on_the_same_partition(kafka_bus, cbus, partitions):
    syms, topic = symbols(), fresh_topic('partitioner')
    spec = TopicSpec(topic, partitions)
    kafka_bus.create_topics(spec); cbus.create_topics(spec)
    for bus, value in ((kafka_bus, b'kafka-python'), (cbus, b'confluent')):  # one client after the other (see below)
        for s in syms: bus.produce(topic, value, key=s)
        bus.flush()
    msgs = read_topic(kafka_bus, topic)
    got = {b'kafka-python': {}, b'confluent': {}}
    for m in msgs: got[m.value][m.key] = m.partition
    # every message is read back before placements are compared; if not, say whether the broker holds them (its end
    # offsets) or the read missed them. (With both clients writing the fresh partitions at once, the first batch of one
    # client to one partition went missing twice, both inside a whole-suite run on the shared test broker, never in 75
    # tries alone; placement is what this test checks, so the clients take turns.)
    assert sum(map(len, got.values())) == 2 * len(syms), {
        'read': Counter(m.partition for m in msgs), 'end offsets': {p: cbus.highwater(topic, p) for p in range(partitions)}}
    want = {s: partition_for(s, partitions) for s in syms}
    assert len(set(want.values())) == partitions  # every partition gets keys: the check compares something everywhere
    assert got[b'kafka-python'] == want
    assert got[b'confluent'] == want


# the bus contract of tests/test_bus.py, on the confluent client
def test_confluent_frames_and_json_round_trip_with_keys_in_kafka_partitions(cbus):
    contract.test_frames_and_json_round_trip_through_the_bus_with_keys_in_kafka_partitions(cbus)

def test_confluent_group_of_two_splits_partitions_and_sees_every_message_once(cbus):
    contract.test_group_of_two_splits_partitions_and_together_sees_every_message_once(cbus)

def test_confluent_committed_offsets_survive_close_and_a_new_member_resumes(cbus):
    contract.test_committed_offsets_survive_close_and_a_new_member_resumes_after_the_last_commit(cbus)

def test_confluent_malformed_messages_go_to_the_dlq_with_the_reason(cbus):
    contract.test_malformed_messages_raise_codec_error_and_go_to_the_dlq_with_the_reason(cbus)


def _poll_until(c, pred, timeout=30):
    got, t0 = [], time.monotonic()
    while not pred(got):
        assert time.monotonic() - t0 < timeout, f"{len(got)} messages in {timeout} s"
        got += c.poll(timeout_ms=200, max_records=1000)
    return got


@pytest.mark.parametrize('client', ['kafka-python', 'confluent'])
def test_a_paused_partition_delivers_nothing_until_resumed_and_highwater_and_position_follow_fetches(client, kafka_bus, cbus):
    bus, topic = (kafka_bus if client == 'kafka-python' else cbus), fresh_topic('pause')
    keys = {p: next(s for s in symbols(200) if partition_for(s, 6) == p) for p in range(6)}
    for k in keys.values(): bus.produce(topic, b'1', key=k)
    bus.flush()
    with bus.consumer([topic], f'pause-{client}') as c:
        _poll_until(c, lambda g: len(g) == 6)
        tp0 = (topic, partition_for('IBM', 6))
        c.pause([tp0])
        assert c.paused() == {tp0}
        for k in keys.values(): bus.produce(topic, b'2', key=k)
        bus.produce(topic, b'2', key='IBM')
        bus.flush()
        got = _poll_until(c, lambda g: len(g) >= 5)
        time.sleep(0.5); got += c.poll(timeout_ms=500)
        assert {m.partition for m in got} == set(range(6)) - {tp0[1]}, 'the paused partition delivered'
        c.resume([tp0])
        assert c.paused() == set()
        late = _poll_until(c, lambda g: len(g) >= 2)
        assert {(m.partition, m.value) for m in late} == {(tp0[1], b'2')} and len(late) == 2
        for p in range(6):  # every message of the partition read: position = high-water mark = messages produced to it
            want = sum(1 for k in [*keys.values(), *keys.values(), 'IBM'] if partition_for(k, 6) == p)
            assert c.highwater(topic, p) == want and c.position(topic, p) == want


# Commit refusal after a rebalance cannot be provoked on tansu: it accepts a stale member's OffsetCommit during a
# rebalance from either client (tried: 20 s of commits while a second member joins). The mapping of librdkafka's
# refusals (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) to False is a lesson in
# nbs/infra/00c_confluent_bus.ipynb, with the errors injected.


def _canon(a): return a[np.lexsort((a['kind'], a['trade_seq'], a['ts'], a['symbol']))]


@pytest.mark.slow
@pytest.mark.parametrize('worker_client,publisher,codec', [('confluent', 'kafka-python', 'arrow'), ('kafka-python', 'confluent', 'json'),
                                                           ('confluent', 'confluent', 'json')])
def test_detect_worker_on_either_client_fed_by_the_other_gives_the_notebook_runners_alerts(worker_client, publisher, codec):
    from velox.infra.services import start_broker
    from velox.runtime.settings import RunOptions
    from velox.runtime.stages import DETECT_INPUTS, stage_worker
    from velox.infra.topics import KIND_TOPICS
    t0, t1 = clock_ns(DAY, '10:00', 'start'), clock_ns(DAY, '10:12', 'end')
    srcs = [s for sym in ('IBM', 'BAC') for s in Catalog(Path(__file__).resolve().parent.parent / 'replay' / 'data').find(sym, DAY)]
    data = {k: np.concatenate([(lambda b: b[(b['ts'] >= t0) & (b['ts'] < t1)])(s.load()) for s in srcs if s.kind == k])
            for k in ('quote', 'trade')}
    want = _canon(run_frame(detect_stage(), data)['alert'])
    assert len(want) > 10
    scheme = lambda client: 'kafka+confluent' if client == 'confluent' else 'kafka'
    with start_broker() as broker:
        hosts = broker.dsn.split('://')[1]
        wbus, pbus = bus_from_dsn(f"{scheme(worker_client)}://{hosts}{KW}"), bus_from_dsn(f"{scheme(publisher)}://{hosts}{KW}")
        pbus.create_topics(list(DETECT_INPUTS))
        out = {}
        th = threading.Thread(target=lambda: out.update(stage_worker(
            'detect', bus=wbus, group='detect', options=RunOptions(until_end=True, max_runtime_s=150))), daemon=True)
        th.start()
        n, syms = 0, {}
        for win in Replay(srcs, start=t0, end=t1).windows(ordered=False):
            for src, b in win:
                publish(pbus, KIND_TOPICS[src.kind], src.kind, b, codec=codec)
                syms.setdefault(KIND_TOPICS[src.kind], set()).add(src.symbol); n += len(b)
        for topic, ss in syms.items(): publish_eos(pbus, topic, sorted(ss))
        pbus.flush()
        th.join(170)
        assert not th.is_alive() and out.get('state') == 'stopped', out
        assert out['events'] == n == sum(map(len, data.values()))
        msgs = read_topic(pbus, 'alerts.darkpool')
        got = np.concatenate([decode_message(m.value)[1] for m in msgs if not is_control(m)])
        _, first = np.unique(got['id'], return_index=True)
        np.testing.assert_array_equal(_canon(got[np.sort(first)]), want)
        wbus.close(); pbus.close()
