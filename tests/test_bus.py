"The bus contract, checked the same way on the embedded MemoryBus and on a real Kafka-protocol broker."
import csv, io, itertools, struct, threading, time, zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
from bus_util import fresh_topic
from velox.infra.topics import TopicSpec, dlq_topic
from velox.infra.bus import is_control, is_eos, partition_for, publish, publish_eos, range_assign, send_to_dlq
from velox.infra.codecs import FRAME_VERSION, CodecError, decode_message, encode_frame, encode_json
from velox.core import day_start_ns
from velox.events import PRICE_SCALE, batch

TICK = Path(__file__).resolve().parent.parent / 'replay/data/lean/equity/usa/tick'




def _raw_trades(n=1500):
    "The first `n` recorded rows of the first trade file of each symbol folder, as text, read with csv."
    out = {}
    for d in sorted(p for p in TICK.iterdir() if p.is_dir()):
        f = sorted(d.glob('*_trade.zip'))[0]
        with zipfile.ZipFile(f) as z:
            rows = list(itertools.islice(csv.reader(io.TextIOWrapper(z.open(z.namelist()[0]))), n))
        out[(d.name.upper(), f.name[:8])] = rows
    return out


def _trades(raw):
    parts = [batch('trade', ts=[day_start_ns(day) + int(r[0]) * 10**6 for r in rows], symbol=[sym] * len(rows),
                   price=[int(r[1]) * (PRICE_SCALE // 10**4) for r in rows], size=[float(r[2]) for r in rows],
                   venue=[r[3] for r in rows], cond=[int(r[4], 16) for r in rows],
                   suspicious=[r[5] == '1' for r in rows], seq=np.arange(len(rows)))
             for (sym, day), rows in raw.items()]
    # interleave symbols by time, as a live feed would
    b = np.concatenate(parts)
    return b[np.argsort(b['ts'], kind='stable')]


def _drain(consumer, n, timeout=20.0):
    "Poll until `n` messages arrived (or fail after `timeout` s)."
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages within {timeout} s"
        got += consumer.poll(timeout_ms=200, max_records=10_000)
    return got


def test_partition_for_matches_kafka_python_default_partitioner():
    murmur2 = pytest.importorskip('kafka.partitioner.default').murmur2
    rng = np.random.default_rng(1)
    keys = ['', 'BRK.B', 'ÉTÉ', '中文'] + [''.join(rng.choice(list('ABCDEFGHIJKLMNOPQRSTUVWXYZ.'), rng.integers(1, 13)))
                                         for _ in range(20_000)]
    for n in (1, 3, 6, 12):
        assert [partition_for(k, n) for k in keys] == [(murmur2(k.encode()) & 0x7fffffff) % n for k in keys]


def test_range_assign_matches_kafka_python_range_assignor():
    Range = pytest.importorskip('kafka.coordinator.assignors.range').RangePartitionAssignor
    parts = {'a': 6, 'b': 6, 'c': 4}
    cluster = SimpleNamespace(partitions_for_topic=lambda t: set(range(parts[t])))
    for subs in ({'m1': ['a', 'b']}, {'m1': ['a', 'b'], 'm2': ['a', 'b']},
                 {'m3': ['a', 'c'], 'm1': ['a', 'b', 'c'], 'm2': ['b']}, {f'm{i}': ['a', 'c'] for i in range(7)}):
        members = [SimpleNamespace(member_id=m, group_instance_id=None, metadata=SimpleNamespace(topics=ts))
                   for m, ts in subs.items()]
        theirs = {m: {(tp.topic, tp.partition) for tp in a.partitions()} for m, a in Range.assign(cluster, members).items()}
        assert range_assign(subs, parts) == theirs


def test_frames_and_json_round_trip_through_the_bus_with_keys_in_kafka_partitions(bus):
    raw = _raw_trades()
    trades = _trades(raw)
    syms = sorted({s for s, _ in raw})
    tf, tj = fresh_topic('frames'), fresh_topic('json')
    n_frames = publish(bus, tf, 'trade', trades, rows_per_frame=256)
    n_json = publish(bus, tj, 'trade', trades[:300], codec='json')
    publish_eos(bus, tf, syms, partitions=False)
    bus.flush()
    assert n_json == 300

    with bus.consumer([tf, tj], fresh_topic('g')) as c:
        msgs = _drain(c, n_frames + len(syms) + n_json)
        # the position after the last message is the partition's highwater: nothing left to read (a client knows a
        # partition's highwater from a fetch response: an empty one may not have had its first yet)
        for t, p in c.assignment():
            deadline = time.monotonic() + 10
            while c.highwater(t, p) is None and time.monotonic() < deadline: assert not c.poll(timeout_ms=100)
            assert c.highwater(t, p) == sum(m.topic == t and m.partition == p for m in msgs)
    assert all(m.partition == partition_for(m.key, 6) for m in msgs)
    assert sum(is_eos(m) for m in msgs) == len(syms)
    for topic in (tf, tj):
        data = [m for m in msgs if m.topic == topic and not is_control(m)]
        for sym in syms:
            # per key, offsets count up and the rows come back complete and in their recorded order
            mine = [m for m in data if m.key == sym]
            assert [m.offset for m in mine] == sorted(m.offset for m in mine)
            got = np.concatenate([decode_message(m.value)[1] for m in mine])
            want = trades[trades['symbol'] == sym] if topic == tf else trades[:300][trades[:300]['symbol'] == sym]
            assert (got == want).all() and len(got) == len(want)
            if topic == tf:  # against the recorded text itself
                rows = next(r for (s, _), r in raw.items() if s == sym)
                assert got['price'].tolist() == [int(r[1]) * (PRICE_SCALE // 10**4) for r in rows]
                assert got['venue'].tolist() == [r[3] for r in rows]
                assert got['cond'].tolist() == [int(r[4], 16) for r in rows]
    assert bus.highwater(tf, partition_for(syms[0], 6)) >= 1


def _wait_for_split(consumers, n_partitions, timeout=30.0):
    "Poll every member (each in its own thread, as workers would) until the group has a stable split."
    deadline, stop = time.monotonic() + timeout, threading.Event()

    def spin(c):
        while not stop.is_set(): assert not c.poll(timeout_ms=100)  # the topic is empty until the split is done

    threads = [threading.Thread(target=spin, args=(c,)) for c in consumers]
    for t in threads: t.start()
    try:
        while time.monotonic() < deadline:
            a = [c.assignment() for c in consumers]
            if all(a) and len(set().union(*a)) == n_partitions == sum(map(len, a)): return a
            time.sleep(0.1)
        raise AssertionError(f"no stable split within {timeout} s: {a}")
    finally:
        stop.set()
        for t in threads: t.join()


def test_group_of_two_splits_partitions_and_together_sees_every_message_once(bus):
    topic, group = fresh_topic('group'), fresh_topic('g')
    bus.create_topics([TopicSpec(topic, partitions=6)])
    c1, c2 = bus.consumer([topic], group, client_id='w'), bus.consumer([topic], group, client_id='w')
    try:
        a1, a2 = _wait_for_split([c1, c2], 6)
        assert a1.isdisjoint(a2) and len(a1) == len(a2) == 3
        keys = [f'SYM{i}' for i in range(40)]
        for i in range(2000): bus.produce(topic, str(i).encode(), key=keys[i % len(keys)])
        bus.flush()
        got, lock, deadline = {c1: [], c2: []}, threading.Lock(), time.monotonic() + 20

        def consume(c):
            while time.monotonic() < deadline:
                with lock:
                    if len(got[c1]) + len(got[c2]) >= 2000: return
                ms = c.poll(timeout_ms=200)
                with lock: got[c] += ms

        threads = [threading.Thread(target=consume, args=(c,)) for c in (c1, c2)]
        for t in threads: t.start()
        for t in threads: t.join()
        values = Counter(int(m.value) for ms in got.values() for m in ms)
        assert values == Counter(range(2000))  # every message, exactly once
        for c, a in ((c1, a1), (c2, a2)):
            assert got[c] and {(m.topic, m.partition) for m in got[c]} <= a
    finally:
        c1.close(); c2.close()


def test_committed_offsets_survive_close_and_a_new_member_resumes_after_the_last_commit(bus):
    topic, group = fresh_topic('commit'), fresh_topic('g')
    for i in range(30): bus.produce(topic, f'a{i}'.encode(), key=f'K{i % 7}')
    bus.flush()
    with bus.consumer([topic], group) as c:
        assert len(_drain(c, 30)) == 30
        assert c.commit()
    for i in range(5): bus.produce(topic, f'b{i}'.encode(), key=f'K{i}')
    bus.flush()
    with bus.consumer([topic], group) as c:
        second = _drain(c, 5)
        assert sorted(m.value for m in second) == [f'b{i}'.encode() for i in range(5)]
        assert c.poll(timeout_ms=500) == []
        # not committed: the next member of the group gets them again
    with bus.consumer([topic], group) as c:
        again = _drain(c, 5)
        assert sorted((m.partition, m.offset) for m in again) == sorted((m.partition, m.offset) for m in second)
        assert c.commit()
    with bus.consumer([topic], group) as c:
        assert c.poll(timeout_ms=1500) == []


def test_malformed_messages_raise_codec_error_and_go_to_the_dlq_with_the_reason(bus):
    topic, group = fresh_topic('dlq'), fresh_topic('g')
    good = encode_frame('trade', _trades(_raw_trades(50))[:20])
    head = struct.calcsize('<4sH16sI')
    n = struct.unpack_from('<I', good, head - 4)[0]
    v99 = b'VXF1' + struct.pack('<H16sI', 99, b'trade', n) + good[head:]
    bus.produce(topic, good, key='A')
    bus.produce(topic, b'\x93garbage\x00', key='B', headers={'origin': b'test'})
    bus.produce(topic, v99, key='C')
    quote = batch('quote', ts=[1_381_239_000 * 10**9], symbol=['D'], bid=[180 * PRICE_SCALE], bid_size=[100.0], venue=['N'])
    bus.produce(topic, encode_json('quote', quote)[0], key='D')  # a valid one-sided quote: it decodes
    bus.flush()
    ok, failed = [], []
    with bus.consumer([topic], group) as c:
        for m in _drain(c, 4):
            try: ok.append(decode_message(m.value))
            except CodecError as e:
                failed.append((m, str(e)))
                send_to_dlq(bus, m, str(e))
        assert c.commit()
    bus.flush()
    assert sorted(k for k, _ in ok) == ['quote', 'trade']
    reasons = {m.key: r for m, r in failed}
    assert set(reasons) == {'B', 'C'}
    assert 'nor valid JSON' in reasons['B']
    assert 'schema version 99' in reasons['C'] and str(FRAME_VERSION) in reasons['C']
    with bus.consumer([dlq_topic(topic)], group) as c:
        dead = {m.key: m for m in _drain(c, 2)}
    for orig, reason in failed:
        d = dead[orig.key]
        assert d.value == orig.value and d.topic == dlq_topic(topic)
        assert d.headers['velox-error'].decode() == reason
        assert d.headers['velox-topic'].decode() == topic
        assert (int(d.headers['velox-partition']), int(d.headers['velox-offset'])) == (orig.partition, orig.offset)
    assert dead['B'].headers['origin'] == b'test'
