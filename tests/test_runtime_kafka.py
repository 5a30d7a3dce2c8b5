"""The worker runtime against a real Kafka-protocol broker and redis-server, as separate processes: scaling
by consumer group, kill -9 and restart, poison messages, SIGTERM, a store outage, metrics endpoints."""
import json, logging, signal, subprocess, sys, time, urllib.request, uuid
from pathlib import Path
import numpy as np
import pytest
from velox.infra.kafka_bus import KafkaBus
from velox.infra.codecs import decode_message, encode_json
from velox.infra.bus import publish, publish_eos
from velox.feeds.recorded import Catalog
from velox.runtime.stages import DETECT_INPUTS
from velox.detect.params import detect_stage
from velox.core import clock_ns
from velox.infra.services import start_broker, start_redis
from velox.runtime.runners import run_frame
from velox.infra.topics import TopicSpec, dlq_topic
from bus_util import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
SRCS = [s for sym in ('IBM', 'BAC') for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)]
DATA = {s.key: s.load() for s in SRCS}


def canon(a): return a[np.lexsort((a['kind'], a['trade_seq'], a['ts'], a['symbol']))]


def window(start=None, end=None):
    t0 = clock_ns(DAY, start, 's') if start else None
    t1 = clock_ns(DAY, end, 'e') if end else None
    cut = lambda b: b[(b['ts'] >= (t0 or 0)) & (b['ts'] < (t1 or 2**62))]
    return {k: np.concatenate([cut(DATA[s.key]) for s in SRCS if s.kind == k]) for k in ('quote', 'trade')}


@pytest.fixture(scope='module')
def day():
    data = window()
    res = run_frame(detect_stage(), data)
    return data, canon(res['alert']), res['nbbo']


def publish_all(bus, data, rows=4096, poison=()):
    n = 0
    for kind, topic in (('quote', 'market.quotes'), ('trade', 'market.trades')):
        n += publish(bus, topic, kind, data[kind], rows_per_frame=rows)
    for topic, value, key in poison: bus.produce(topic, value, key=key)
    for topic in DETECT_INPUTS: publish_eos(bus, topic, ['IBM', 'BAC'])
    bus.flush()
    return n


class Fleet:
    "Worker processes (`velox worker detect`) of one consumer group."
    def __init__(self, tmp, broker, group=None, extra=(), until_end=True):
        self.tmp, self.broker, self.group, self.extra, self.procs = tmp, broker, group or f'g-{uuid.uuid4().hex[:6]}', list(extra), {}
        self.end = ['--until-end'] if until_end else ['--stop-file', str(self.stop_path)]

    @property
    def stop_path(self): return self.tmp / 'stop'

    def start(self, name, *more):
        cmd = [sys.executable, '-m', 'velox.face.cli', 'worker', 'detect', '--bus', self.broker.dsn + KW, '--group', self.group,
               '--client-id', name, *self.end, '--status', str(self.status_path(name)), '--max-runtime', '240',
               '--out-dir', str(self.tmp), *self.extra, *more]
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self.procs[name]

    def status_path(self, name): return self.tmp / f'status-{name}.json'

    def status(self, name):
        try: return json.loads(self.status_path(name).read_text())
        except (FileNotFoundError, json.JSONDecodeError): return {}

    def wait_settled(self, names, partitions=12, timeout=90):
        "Until the named members together own every input partition exactly once."
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in names:
                if self.procs[n].poll() is not None: pytest.fail(f"worker {n} exited early:\n{self.procs[n].stdout.read()}")
            shares = [self.status(n).get('assignment') for n in names]
            if all(shares):
                owned = [tuple(tp) for s in shares for tp in s]
                if len(owned) == len(set(owned)) == partitions: return shares
            time.sleep(0.2)
        pytest.fail('the consumer group did not settle')

    def wait_until(self, name, pred, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(name)
            if st and pred(st): return st
            if self.procs[name].poll() is not None: return self.status(name)
            time.sleep(0.02)
        pytest.fail(f'{name}: condition not reached; status {self.status(name)}')

    def finish(self, names=None, timeout=240):
        for n in names or list(self.procs):
            out, _ = self.procs[n].communicate(timeout=timeout)
            assert self.procs[n].returncode == 0, out
        return {n: self.status(n) for n in names or self.procs}


def scrape(port) -> dict:
    "One member's /metrics: {(sample name, sorted labels): value}."
    from prometheus_client.parser import text_string_to_metric_families
    text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def metric(scrapes:dict, name:str) -> list:
    "Every value of the sample `name` over all members' scrapes."
    return [v for m in scrapes.values() for (k, _), v in m.items() if k == name]


def metrics_until(ports:dict, cond, timeout=60) -> dict:
    "Scrape every member's /metrics until `cond(scrapes)` holds (a failed fetch is retried); the scrapes. Fails at the deadline."
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try: last = {n: scrape(p) for n, p in ports.items()}
        except OSError as e: last = repr(e)
        else:
            if cond(last): return last
        time.sleep(0.2)
    pytest.fail(f'the metrics endpoints never showed the processed day within {timeout} s; last scrape: {last}')


def dedupe(a, key='id'):
    _, first = np.unique(a[key], return_index=True)
    return a[np.sort(first)]


def outputs(bus):
    "Alerts (de-duplicated by id) and NBBO updates (de-duplicated by (symbol, seq)) on the output topics."
    al = np.concatenate([decode_message(m.value)[1] for m in read_topic(bus, 'alerts.darkpool')])
    nb = np.concatenate([decode_message(m.value)[1] for m in read_topic(bus, 'market.nbbo')])
    nb_key = np.char.add(nb['symbol'], np.char.mod('%d', nb['seq']))
    nb = nb[np.sort(np.unique(nb_key, return_index=True)[1])]
    return canon(dedupe(al)), nb[np.lexsort((nb['seq'], nb['symbol']))]


def _kbus(broker): return KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)


@pytest.mark.parametrize('members', [1, 3])
def test_one_or_three_workers_in_a_group_give_the_same_outputs_for_a_real_day(members, day, tmp_path):
    data, expect, nbbo = day
    with start_broker() as broker, start_redis() as redis_svc:
        # the members stop together once the day is processed: on the tansu broker, a member that leaves while
        # another is busy can stall the busy one's rejoin for minutes (kafka-python 3.0.12; see the notes)
        fleet = Fleet(tmp_path, broker, extra=['--hot', redis_svc.dsn], until_end=False)
        names = [f'w{i}' for i in range(members)]
        for n in names: fleet.start(n, '--metrics-port', '0')
        fleet.wait_settled(names)
        # metrics and health of a running member
        port = fleet.status(names[0])['metrics_port']
        assert urllib.request.urlopen(f'http://127.0.0.1:{port}/health').status == 200
        bus = _kbus(broker)
        publish_all(bus, data)
        total = sum(map(len, data.values()))
        deadline = time.monotonic() + 240
        while sum(fleet.status(n).get('events', 0) for n in names) < total:
            assert time.monotonic() < deadline, f"the group did not process the day: {[fleet.status(n) for n in names]}"
            time.sleep(0.2)
        # the members run until the stop file: their endpoints must count the whole day and no lag on the 12 partitions
        ports = {n: fleet.status(n)['metrics_port'] for n in names}
        done = lambda m: sum(metric(m, 'velox_events_total')) == total and \
            len(metric(m, 'velox_consumer_lag_messages')) == 12 and not any(metric(m, 'velox_consumer_lag_messages'))
        scraped = metrics_until(ports, done)
        fleet.stop_path.touch()
        stats = fleet.finish(names)
        al, nb = outputs(bus)
        np.testing.assert_array_equal(al, expect)
        np.testing.assert_array_equal(nb, nbbo[np.lexsort((nbbo['seq'], nbbo['symbol']))])
        assert sum(s['events'] for s in stats.values()) == sum(map(len, data.values()))
        consumed = sum(metric(scraped, 'velox_consumed_messages_total'))
        assert consumed == sum(s['consumed'] for s in stats.values()) > 0, (consumed, stats)
        bus.close()


def test_kill_9_mid_stream_and_restart_misses_nothing_and_stores_nothing_twice(day, tmp_path):
    data, expect, _ = day
    total = sum(map(len, data.values()))
    with start_broker() as broker, start_redis() as redis_svc:
        store = f'chdb://{tmp_path.absolute()}/chdb'
        fleet = Fleet(tmp_path, broker, extra=['--hot', redis_svc.dsn, '--store', store, '--sink-store', '--max-records', '1'])
        fleet.start('a'); fleet.wait_settled(['a'])
        bus = _kbus(broker)
        publish_all(bus, data, rows=512)
        st = fleet.wait_until('a', lambda s: s['events'] > total // 5 and s['commits'] > 0)
        fleet.procs['a'].send_signal(signal.SIGKILL); fleet.procs['a'].wait()
        assert st['state'] == 'running' and st['events'] < total, 'killed mid-stream'
        fleet.start('b')
        sb = fleet.finish(['b'])['b']
        assert sb['restored'] >= 1  # the symbols checkpointed before the kill come back from their snapshots
        al, _ = outputs(bus)
        np.testing.assert_array_equal(al, expect)  # on the topic, after de-duplication by id: nothing missing
        bus.close()
    from velox.infra.stores import Store
    with Store(store) as s:  # in the store: every alert exactly once
        np.testing.assert_array_equal(canon(s.read('alert')), expect)
        assert s.count('alert') == len(expect)


def test_poison_messages_go_to_the_dead_letter_topic_with_their_reason_and_processing_continues(tmp_path):
    data = window('10:00', '10:30')
    expect = canon(run_frame(detect_stage(), data)['alert'])
    import struct
    from velox.infra.codecs import encode_frame
    good = encode_frame('trade', data['trade'][data['trade']['symbol'] == 'IBM'][:3])
    v99 = good[:4] + struct.pack('<H', 99) + good[6:]
    poison = [('market.trades', b'{"type": "trade", "symbol": "IBM", "price": ', 'IBM'),  # invalid JSON
              ('market.trades', encode_json('quote', data['quote'][:1])[0], 'IBM'),  # wrong type
              ('market.quotes', v99, 'BAC')]  # unknown frame version
    with start_broker() as broker:
        fleet = Fleet(tmp_path, broker)
        fleet.start('w'); fleet.wait_settled(['w'])
        bus = _kbus(broker)
        publish_all(bus, data, poison=poison)
        st = fleet.finish(['w'])['w']
        assert st['dead_letters'] == 3
        al, _ = outputs(bus)
        np.testing.assert_array_equal(al, expect)
        dead = read_topic(bus, dlq_topic('market.trades')) + read_topic(bus, dlq_topic('market.quotes'))
        assert len(dead) == 3
        reasons = sorted(m.headers['velox-error'].decode() for m in dead)
        assert any('JSON' in r for r in reasons) and any("'quote' message on market.trades" in r for r in reasons) \
            and any('schema version 99' in r for r in reasons), reasons
        for m in dead:
            assert m.headers['velox-topic'].decode() in DETECT_INPUTS and int(m.headers['velox-offset']) >= 0
            assert int(m.headers['velox-partition']) == m.partition  # a DLQ keeps its topic's partitioning
        bus.close()


def test_sigterm_finishes_the_batch_commits_and_a_restart_continues_exactly_where_it_stopped(day, tmp_path):
    data, expect, _ = day
    total = sum(map(len, data.values()))
    with start_broker() as broker, start_redis() as redis_svc:
        fleet = Fleet(tmp_path, broker, extra=['--hot', redis_svc.dsn, '--max-records', '1'])
        fleet.start('a'); fleet.wait_settled(['a'])
        bus = _kbus(broker)
        publish_all(bus, data, rows=512)
        fleet.wait_until('a', lambda s: s['events'] > total // 5)
        t0 = time.monotonic()
        fleet.procs['a'].send_signal(signal.SIGTERM)
        sa = fleet.finish(['a'])['a']
        print(f"SIGTERM to exit: {time.monotonic() - t0:.2f} s")
        assert sa['state'] == 'stopped' and 0 < sa['events'] < total
        fleet.start('b')
        sb = fleet.finish(['b'])['b']
        # everything committed before the exit: the successor is handed nothing twice and nothing is lost
        assert sb['skipped'] == 0 and sb['restored'] >= 1
        assert sa['events'] + sb['events'] == total
        al, _ = outputs(bus)
        np.testing.assert_array_equal(al, expect)
        bus.close()


def test_a_redis_outage_mid_run_loses_no_hot_state_and_no_checkpoint(day, tmp_path):
    data, expect, nbbo = day
    total = sum(map(len, data.values()))
    rdir = tmp_path / 'redis'
    with start_broker() as broker:
        redis_svc = start_redis(state_dir=rdir, persist=True)
        port = redis_svc.port
        fleet = Fleet(tmp_path, broker, extra=['--hot', redis_svc.dsn, '--sink-hot', '--max-records', '1'])
        fleet.start('a'); fleet.wait_settled(['a'])
        bus = _kbus(broker)
        publish_all(bus, data, rows=512)
        fleet.wait_until('a', lambda s: s['events'] > total // 5)
        redis_svc.stop()
        fleet.wait_until('a', lambda s: s['sink_failures'] > 0)
        time.sleep(1.0)
        redis_svc = start_redis(port=port, state_dir=rdir, persist=True)
        sa = fleet.finish(['a'])['a']
        assert sa['sink_failures'] > 0 and sa['events'] == total
        al, _ = outputs(bus)
        np.testing.assert_array_equal(al, expect)
        from velox.infra.redis_hot import RedisHot
        from velox.events import to_dicts
        with RedisHot(redis_svc.dsn) as hot:
            for sym in ('IBM', 'BAC'):
                last = nbbo[nbbo['symbol'] == sym][-1:]
                assert hot.get_l1(sym) == to_dicts(last, 'nbbo')[0]
        redis_svc.stop()
        bus.close()


def test_no_secret_is_logged_when_connecting_with_sasl_settings(caplog):
    from velox.infra.kafka_bus import kafka_client_kw
    from velox.core import Config
    cfg = Config.load(env={'VELOX_KAFKA_SASL_MECHANISM': 'SCRAM-SHA-256', 'VELOX_KAFKA_SASL_USERNAME': 'u'})
    kw = kafka_client_kw(cfg, env={'VELOX_KAFKA_PASSWORD': 'pw-Zx81q'})
    with start_broker() as broker, caplog.at_level(logging.DEBUG):
        bus = KafkaBus(broker.dsn.split('://')[1], **kw)  # PLAINTEXT broker: the SASL settings ride along unused
        bus.produce('market.trades', b'x', key='IBM'); bus.flush()
        log = repr(bus) + caplog.text
        bus.close()
    assert 'pw-Zx81q' not in log


def test_velox_topics_create_is_idempotent_and_describe_shows_what_the_broker_has(tmp_path):
    with start_broker() as broker:
        kb = _kbus(broker)  # made by hand before `velox topics create`, wrongly: 60 s retention and gzip (the registry: 30d lz4)
        kb.create_topics([TopicSpec('alerts.darkpool', retention_ms=60_000, compression='gzip')])
        kb.close()
        run = lambda *a: subprocess.run([sys.executable, '-m', 'velox.face.cli', 'topics', *a, '--bus', broker.dsn,
                                         '--out-dir', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        first, second = run('create', '--models', 'gbt'), run('create', '--models', 'gbt')
        assert first.returncode == second.returncode == 0, first.stderr + second.stderr
        made = first.stdout.split(': ', 1)[1].strip().split(', ')
        assert 'predictions.gbt' in made and 'alerts.darkpool' not in made and 'all existed' in second.stdout
        desc = run('describe', 'market.trades', 'dlq.market.trades', 'system.metrics', 'alerts.darkpool')
        assert desc.returncode == 0, desc.stderr
        rows = {line.split()[0]: line.split()[2:] for line in desc.stdout.splitlines()[1:5]}
        assert rows == {'market.trades': ['6', '7d', 'lz4', 'delete', 'symbol', 'arrow', 'ok'],
                        'dlq.market.trades': ['6', '30d', 'zstd', 'delete', 'symbol', 'arrow', 'ok'],
                        'system.metrics': ['1', '3d', 'lz4', 'delete', 'worker', 'arrow', 'ok'],
                        'alerts.darkpool': ['6', '1m', '(30d)', 'gzip', '(lz4)', 'delete', 'symbol', 'arrow', 'MISMATCH', 'retention,',
                                            'compression']}, desc.stdout
