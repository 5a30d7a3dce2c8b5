"""Acceptance of operations (issue 21): a real Prometheus (Debian's) discovers a fleet (two detect members writing L1
to a hot store, one execution member with a tiny position cap) through the targets file its supervisor keeps,
scrapes the workers while a real window is replayed, evaluates velox's rules (intervals and `for` shortened), and
sends its alerts to velox's alert receiver, which notifies a local webhook. Everything is driven for real: the hot
store (redis) is stopped for a moment (the sink's circuit opens, partitions pause, consumer lag builds up, then
drains), scripted signals on the real NBBO make the execution stage trade and trip its risk limit, poison messages
go to the dead-letter topic, and a member is killed. Prometheus's HTTP API gives the fleet's events/s and lag;
every rule expression and dashboard query returns data that moved during the test (a gauge that never changes does
not count), but for the alerts named in NOT_FIRED, each with what the test checks instead."""
import json, os, shutil, signal, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
import yaml
from velox.feeds.recorded import Catalog
from velox.feeds.replay import Replay
from velox.core import clock_ns
from velox.infra.alerting import ALERTS, RECORDING, metric_names
from velox.infra.bus import publish
from velox.infra.grafana import dashboard, panel_queries
from velox.infra.kafka_bus import KafkaBus
from velox.infra.prometheus import PrometheusAPI
from velox.infra.services import PrometheusSetup, free_port, services_down, start_broker, start_fleet_prometheus, start_redis
from velox.infra.topics import apply as create_topics
from velox.runtime.fleet import FleetSpec
from velox.runtime.launcher import fleet_start, fleet_status, fleet_stop
from velox.runtime.stages import publish_replay
from reference_trading import scripted_signals

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
SRCS = [s for sym in ('IBM', 'BAC') for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)]
T0, T1 = clock_ns(DAY, '10:00', 't'), clock_ns(DAY, '10:10', 't')
# a signal every 30 s per symbol (long, long, short) against a 150-share cap: every second long is blocked by the
# max_position rule, a risk event every 90 s of event time (14 in this window, in process)
EXEC = {'accounts': [{'name': 'paper', 'strategies': [{'name': 'momo', 'limits': {'max_position': 150}}]}]}
FIRED = {'VeloxWorkerDown', 'VeloxDeadLetters', 'VeloxSinkDown', 'VeloxRiskAlert'}  # seen firing here
LIVE_ONLY = {'VeloxEventTimeLag', 'VeloxEventTimeStalled', 'VeloxNoMarketData'}
NOT_FIRED = {  # alerts a two-minute replay cannot (or must not) fire, and what the test checks of them instead
    'VeloxEventTimeLag': 'live only: the replay (years behind) must not fire it (checked); its expression on mode="replay" returns the lag',
    'VeloxEventTimeStalled': 'live only (checked silent); needs minutes of a standing watermark (promtool); its inputs moved',
    'VeloxNoMarketData': 'live only (checked silent) and wall-clock market hours (promtool); its input moved',
    'VeloxConsumerLagGrowing': 'needs > 10k messages of lag growing for 10 minutes (promtool); its input, consumer lag, moved (checked)',
}
RATE = 'sum(velox:events:rate1m{fleet="fleet", stage="detect"})'
PRESENCE_ONLY = {'Firing alerts'}  # a count of firing alerts per name may stay 1: that its series appear (alerts fire) is the change


class Hook:
    "A local webhook receiver: the bodies POSTed to it."
    def __init__(self):
        self.got = []
        got = self.got
        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
                self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
            def log_message(self, *a): pass
        self.srv = ThreadingHTTPServer(('127.0.0.1', 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.srv.server_address[1]}/hook'


def declared(exposition:str) -> set:
    "The metric names a /metrics page declares (`# TYPE` lines), with the sample suffixes of counters and histograms."
    out = set()
    for line in exposition.splitlines():
        if line.startswith('# TYPE '):
            _, _, name, kind = line.split()
            out |= {name} | ({f'{name}_total'} if kind == 'counter' else {f'{name}_{x}' for x in ('bucket', 'sum', 'count')} if kind == 'histogram' else set())
    return out


def value(api, expr):
    r = api.query(expr)
    return r[0]['value'] if r else None


def firing(api, name, **labels):
    return [a for a in api.alerts('firing') if a['labels']['alertname'] == name and all(a['labels'].get(k) == v for k, v in labels.items())]


def moved(api, expr, since) -> list:
    "The series of `expr` (evaluated every 0.5 s since `since`) that took at least two values."
    return [r for r in api.query_range(expr, since, time.time(), 0.5) if len(set(r['values'])) > 1]


def ever(api, expr, since) -> list:
    "The series `expr` had at some point since `since`."
    return api.query_range(expr, since, time.time(), 0.5)


@pytest.mark.skipif(not shutil.which('prometheus'), reason='needs Debian prometheus (tests/run.sh installs it)')
def test_prometheus_scrapes_the_fleet_and_every_rule_and_panel_sees_it_move(tmp_path):
    n_events = sum(len((lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load())) for s in SRCS)  # reference: rows in the window
    hook = Hook()
    (tmp_path / 'notify.yaml').write_text(yaml.safe_dump({'outputs': {'ops': {'type': 'webhook', 'url': hook.url, 'attempts': 2}}}))
    (tmp_path / 'exec.yaml').write_text(yaml.safe_dump(EXEC))
    fd, sd, rd = tmp_path / 'fleet', tmp_path / 'services', tmp_path / 'redis'
    sd.mkdir()
    with start_broker() as broker:
        redis = start_redis(state_dir=rd)
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        create_topics(bus)
        for sym in ('IBM', 'BAC'): publish(bus, 'signals.final', 'signal', scripted_signals(sym, T0, T1, every_s=30, offset_s=7))
        bus.flush()
        spec = FleetSpec.from_dict({'params': {'bus': broker.dsn + KW}, 'mode': 'replay', 'restart': {'backoff_s': 30}, 'stop_timeout_s': 20,
                                    'stages': {'detect': {'count': 2, 'params': {'hot': redis.dsn}},
                                               'execution': {'count': 1, 'params': {'params': str(tmp_path / 'exec.yaml')}}}}, root=ROOT)
        urls = start_fleet_prometheus(PrometheusSetup(free_port(), [fd], scrape_s=0.5, eval_s=0.5, for_s=1,
                                                      notify=str(tmp_path / 'notify.yaml'), receiver_port=free_port()), sd)
        api = PrometheusAPI(urls['prometheus'])
        since = time.time()
        try:
            fleet_start(spec, fd)
            api.wait('three targets up', lambda: value(api, 'sum(up{job="velox"})') == 3, timeout=90)
            targets = json.loads((fd / 'targets.json').read_text())
            assert sorted(t['labels']['member'] for t in targets) == ['detect-0', 'detect-1', 'execution-0']
            api.wait('every member to own partitions', lambda: value(api, 'count(count by (member) (velox_consumer_lag_messages))') == 3,
                     timeout=60)

            # the hot store goes away, then a real window at 50x and its end-of-stream markers: the detect members' sink
            # circuit opens, they pause (nothing committed) while the window keeps coming: consumer lag builds up
            redis.stop()
            pub = threading.Thread(target=publish_replay, args=(bus, Replay(SRCS, start=T0, end=T1, speed=50)))
            pub.start()
            down = api.wait('the sink-down alert', lambda: firing(api, 'VeloxSinkDown', stage='detect', kind='store_unavailable'), timeout=60)
            api.wait('a circuit open', lambda: value(api, 'max(velox_sink_circuit_open{sink="HotSink"})') == 1, timeout=30)
            held = api.wait('lag to build up', lambda: value(api, 'sum(velox:consumer_lag:sum{group="velox-detect"})'), timeout=30)
            print(f'sink down: {sorted(a["labels"]["member"] for a in down)}; detect lag while paused: {held:.0f} messages')
            redis = start_redis(port=redis.port, state_dir=rd)  # back, on the same address: the members resume

            rate = api.wait('events/s of the fleet', lambda: value(api, RATE), timeout=60)
            lag = api.query('velox:consumer_lag:sum{group="velox-detect"}')
            print(f'events/s (1m rate, from Prometheus): {rate:.1f}; consumer lag series: {len(lag)}')
            assert rate > 0 and {r['metric']['topic'] for r in lag} == {'market.quotes', 'market.trades'}
            pub.join()
            # every event of the window was counted, once, by the detect members (the reference counts the rows itself)
            counted = lambda: value(api, 'sum(velox_events_total{stage="detect"})')
            try: api.wait('every event counted', lambda: counted() == n_events, timeout=60)
            except Exception: pytest.fail(f'the detect members counted {counted()} events, the window has {n_events}')
            print(f'events/s over the last minute, once all counted: {value(api, RATE):.0f}')
            api.wait('the lag to drain', lambda: value(api, 'sum(velox:consumer_lag:sum{group="velox-detect"})') == 0, timeout=30)
            api.wait('the circuits to close', lambda: value(api, 'max(velox_sink_circuit_open)') == 0, timeout=30)
            # the execution member trades the scripted signals on the detect members' NBBO and trips its position cap
            risk = api.wait('the risk alert', lambda: firing(api, 'VeloxRiskAlert', member='execution-0'), timeout=60)
            print('risk alert:', risk[0]['labels']['topic'], '| fills so far:', value(api, 'sum(velox_produced_events_total{topic="orders.fills"})'))

            # a replay is years behind the wall clock, yet no event-time alert: the fleet says mode replay
            assert value(api, 'max(velox_event_time_lag_seconds)') > 365 * 86400
            assert not [a for a in api.alerts() if a['labels']['alertname'] in LIVE_ONLY]

            # poison messages: the dead-letter alert fires for real; a second one later makes the count move
            bus.produce('market.trades', b'\x00 not an Arrow IPC message', key='IBM'); bus.flush()
            dlq = api.wait('the dead-letter alert', lambda: firing(api, 'VeloxDeadLetters', topic='market.trades'), timeout=60)
            print('dead-letter alert:', dlq[0]['labels']['member'])
            bus.produce('market.trades', b'\x00 another bad one', key='IBM'); bus.flush()
            api.wait('two dead letters', lambda: value(api, 'sum(velox_dead_letters_total)') == 2, timeout=30)

            # kill detect-1: its target stays, down; the worker-down alert fires and a notification arrives
            kernel = fleet_status(fd)['members']['detect-1']['kernel_pid']
            os.kill(kernel, signal.SIGKILL)
            down = api.wait('the worker-down alert', lambda: firing(api, 'VeloxWorkerDown', member='detect-1'), timeout=60)
            assert down[0]['annotations']['runbook_url'].endswith('/VeloxWorkerDown.md')
            note = api.wait('the notification', lambda: [g for g in hook.got if g['title'] == 'VeloxWorkerDown firing (detect-1)'], timeout=30)
            print('notification:', note[0]['title'], '|', note[0]['text'].splitlines()[0])
            assert note[0]['fields']['labels']['severity'] == 'critical'
            assert not firing(api, 'VeloxWorkerDown', member='detect-0')
            time.sleep(2)  # Prometheus resends firing alerts: still one notification per alert
            assert len([g for g in hook.got if g['title'] == 'VeloxWorkerDown firing (detect-1)']) == 1

            # every recording rule moved during the test
            for name in RECORDING: assert moved(api, name, since), f'recording rule {name} never changed'
            # every alert expression returned data (its alert fired), but those NOT_FIRED: their inputs moved instead
            assert {a.name for a in ALERTS} == FIRED | set(NOT_FIRED), 'a new alert: say how this test drives it'
            for a in ALERTS:
                if a.name in FIRED: assert ever(api, f'ALERTS{{alertname="{a.name}", alertstate="firing"}}', since), f'{a.name} never fired'
                else:
                    for m in metric_names(a.expr): assert moved(api, m, since), f'{a.name} ({NOT_FIRED[a.name]}): {m} never changed'
            lag_expr = next(a.expr for a in ALERTS if a.name == 'VeloxEventTimeLag')
            assert ever(api, lag_expr.replace('mode="live"', 'mode="replay"'), since)
            # ... and the raw series behind them moved too (the new gauges included)
            for expr in ('velox_events_total', 'velox_consumed_messages_total', 'velox_produced_events_total', 'velox_batch_seconds_count',
                         'velox_event_time_lag_seconds', 'velox_event_time_seconds', 'velox_state_symbols', 'velox_sink_circuit_open',
                         'velox_consumer_lag_messages', 'velox_errors_total', 'process_resident_memory_bytes'):
                assert moved(api, expr, since), f'{expr} never changed'

            # the dashboard: every panel's query names metrics the workers really export (the names scraped from them
            # here) and returned data that moved
            exported = {r['metric']['__name__'] for r in api.query('count by (__name__) ({job="velox"})')}
            exported |= declared(urllib.request.urlopen(f"http://{targets[0]['targets'][0]}/metrics").read().decode())  # also those with no sample yet
            print(f'{len(exported)} metric names exported by the workers')
            for title, q in panel_queries(dashboard()):
                unknown = metric_names(q) - exported - set(RECORDING) - {'ALERTS'}
                assert not unknown, f'panel {title!r}: {unknown} is not exported by the workers'
                if title in PRESENCE_ONLY: assert ever(api, q, since), f'panel {title!r}: {q} never returned data'
                else: assert moved(api, q, since), f'panel {title!r}: {q} never changed'
            print(f'{time.time() - since:.0f} s from Prometheus up to the last check')
        finally:
            fleet_stop(fd, timeout=60)
            services_down(sd)
            redis.stop()
            hook.srv.shutdown()
