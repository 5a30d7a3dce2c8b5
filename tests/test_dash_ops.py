"""The desk's operations panels against a bus — the embedded MemoryBus and a real Kafka-protocol broker: consumer lag
is end offset minus committed offset per partition, and the topic viewer shows the last N messages of each
partition, decoded."""
import json, time, uuid
import numpy as np
from bus_util import fresh_topic
from velox.infra.codecs import encode_frame
from velox.infra.bus import partition_for, publish_eos
from velox.face.desk_ops import TopicViewer, consumer_lag, lag_probe
from velox.events import PRICE_SCALE, batch
from velox.infra.topics import TopicSpec




def _drain(consumer, n, timeout=30.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages within {timeout} s"
        got += consumer.poll(timeout_ms=200, max_records=1000)
    return got


def test_consumer_lag_is_end_offset_minus_committed_offset_per_partition(bus):
    topic, group = fresh_topic('lag'), f'lag-{uuid.uuid4().hex[:6]}'
    bus.create_topics([TopicSpec(topic, 2)])
    produced = {0: 7, 1: 5}
    for p, n in produced.items():
        for i in range(n): bus.produce(topic, b'%d' % i, partition=p)
    bus.flush()
    with bus.consumer([topic], group) as c:
        got = _drain(c, sum(produced.values()))
        assert {p: sum(m.partition == p for m in got) for p in (0, 1)} == produced
        assert consumer_lag(bus, group, [topic]) == {(topic, 0): 7, (topic, 1): 5}  # nothing committed yet
        committed = {0: 4, 1: 2}  # the group has processed the first 4 and 2 messages
        assert c.commit({(topic, p): o for p, o in committed.items()})
        lag = consumer_lag(bus, group)
        assert lag == {(topic, p): produced[p] - committed[p] for p in (0, 1)}, lag
        assert lag_probe(bus, [group])() == {f'consumer lag: {group} / {topic}': 6}
        assert c.commit()  # everything polled
        assert consumer_lag(bus, group) == {(topic, 0): 0, (topic, 1): 0}


def test_topic_viewer_shows_the_last_n_messages_of_each_partition_decoded(bus):
    topic, parts, n = fresh_topic('viewer'), 3, 4
    bus.create_topics([TopicSpec(topic, parts)])
    symbols = ['IBM', 'BAC', 'MSFT', 'AAPL', 'XOM']
    sent = {p: [] for p in range(parts)}  # what each partition holds, in order: (key, kind, events, first event)
    for i in range(30):
        sym = symbols[i % len(symbols)]
        rows = 1 + i % 3
        b = batch('trade', ts=(1_381_240_800 + i) * 10**9 + np.arange(rows), symbol=[sym] * rows,
                  price=(100 + i) * PRICE_SCALE, size=10.0 * (i + 1), venue='D', seq=np.arange(rows) + 100 * i)
        bus.produce(topic, encode_frame('trade', b), key=sym)
        sent[partition_for(sym, parts)].append((sym, 'trade', rows, {'seq': 100 * i, 'price': 100.0 + i, 'size': 10.0 * (i + 1)}))
    publish_eos(bus, topic, ['IBM'], partitions=False)
    sent[partition_for('IBM', parts)].append(('IBM', 'end of stream', 0, None))
    bus.produce(topic, b'\x00not a frame', key='BAC')
    sent[partition_for('BAC', parts)].append(('BAC', 'undecodable', 0, None))
    bus.flush()

    tv = TopicViewer(bus, topic)
    shown = tv.load(topic, n)
    expected = [(p, len(msgs) - len(last) + j, *m) for p, msgs in sent.items() if msgs
                for last in [msgs[-n:]] for j, m in enumerate(last)]
    assert shown == len(expected) == sum(min(n, len(v)) for v in sent.values())
    d = tv.source.data
    rows = list(zip(d['partition'], d['offset'], d['key'], d['kind'], d['events'], d['first']))
    assert [r[:5] for r in rows] == [e[:5] for e in expected]
    for r, e in zip(rows, expected):
        if e[5] is None: continue
        first = json.loads(r[5])
        assert (first['seq'], first['size'], first['symbol']) == (e[5]['seq'], e[5]['size'], e[2])
        assert first['price'] == e[5]['price']  # in dollars
    assert topic in tv.topic.options and tv.topic.value == topic
