"""Acceptance of operations (issue 21): a real Prometheus (Debian's) discovers a two-member detect fleet through the
targets file its supervisor keeps, scrapes the workers while a real window is replayed, evaluates velox's rules
(intervals and `for` shortened), and sends its alerts to velox's alert receiver, which notifies a local webhook.
Prometheus's HTTP API gives the fleet's events/s and lag; a poison message fires the dead-letter alert; killing a
member fires the worker-down alert and a notification arrives; the replay's event-time lag (years) fires nothing."""
import json, os, shutil, signal, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
import yaml
from velox.feeds.recorded import Catalog
from velox.feeds.replay import Replay
from velox.core import clock_ns
from velox.infra.alerting import ALERTS, RECORDING, metric_names
from velox.infra.grafana import dashboard, panel_queries
from velox.infra.kafka_bus import KafkaBus
from velox.infra.prometheus import PrometheusAPI
from velox.infra.services import PrometheusSetup, free_port, services_down, start_broker, start_fleet_prometheus
from velox.infra.topics import apply as create_topics
from velox.runtime.fleet import FleetSpec
from velox.runtime.launcher import fleet_start, fleet_status, fleet_stop
from velox.runtime.stages import publish_replay

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
KW = '?session_timeout_ms=6000&heartbeat_interval_ms=1000'
DAY = '2013-10-08'
SRCS = [s for sym in ('IBM', 'BAC') for s in Catalog(ROOT / 'replay' / 'data').find(sym, DAY)]
T0, T1 = clock_ns(DAY, '10:00', 't'), clock_ns(DAY, '10:10', 't')
# what the detect fleet exercises for real; the rest (a store down, risk alerts of the execution stage) only in promtool's tests
LIVE_ONLY = {'VeloxEventTimeLag', 'VeloxEventTimeStalled', 'VeloxNoMarketData'}
NOT_IN_A_DETECT_FLEET = {'VeloxSinkDown', 'VeloxRiskAlert'}
PANELS_NOT_IN_A_DETECT_FLEET = {'Sink errors and other errors/s', 'Orders and fills/s', 'Position updates/s (PnL: see the desk)', 'Risk alerts (5 min)'}


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


@pytest.mark.skipif(not shutil.which('prometheus'), reason='needs Debian prometheus (tests/run.sh installs it)')
def test_prometheus_scrapes_the_fleet_fires_worker_down_and_dead_letters_and_notifies_a_webhook(tmp_path):
    n_events = sum(len((lambda b: b[(b['ts'] >= T0) & (b['ts'] < T1)])(s.load())) for s in SRCS)  # reference: rows in the window
    hook = Hook()
    (tmp_path / 'notify.yaml').write_text(yaml.safe_dump({'outputs': {'ops': {'type': 'webhook', 'url': hook.url, 'attempts': 2}}}))
    fd, sd = tmp_path / 'fleet', tmp_path / 'services'
    sd.mkdir()
    with start_broker() as broker:
        bus = KafkaBus(broker.dsn.split('://')[1], session_timeout_ms=6000, heartbeat_interval_ms=1000)
        create_topics(bus)
        spec = FleetSpec.from_dict({'params': {'bus': broker.dsn + KW}, 'stages': {'detect': 2}, 'mode': 'replay',
                                    'restart': {'backoff_s': 30}, 'stop_timeout_s': 20}, root=ROOT)
        urls = start_fleet_prometheus(PrometheusSetup(free_port(), [fd], scrape_s=0.5, eval_s=0.5, for_s=1,
                                                      notify=str(tmp_path / 'notify.yaml'), receiver_port=free_port()), sd)
        api = PrometheusAPI(urls['prometheus'])
        try:
            fleet_start(spec, fd)
            api.wait('two detect targets up', lambda: value(api, 'sum(up{job="velox", stage="detect"})') == 2, timeout=90)
            targets = json.loads((fd / 'targets.json').read_text())
            assert sorted(t['labels']['member'] for t in targets) == ['detect-0', 'detect-1']
            api.wait('both members to own partitions', lambda: value(api, 'count(count by (member) (velox_consumer_lag_messages))') == 2,
                     timeout=60)

            # a real window at 50x, then its end-of-stream markers: the fleet's events/s and lag, read from Prometheus while it flows
            pub = threading.Thread(target=publish_replay, args=(bus, Replay(SRCS, start=T0, end=T1, speed=50)))
            pub.start()
            rate = api.wait('events/s of the fleet', lambda: value(api, 'sum(velox:events:rate1m{fleet="fleet", stage="detect"})'), timeout=60)
            lag = api.query('velox:consumer_lag:sum{group="velox-detect"}')
            print(f'events/s (1m rate, from Prometheus): {rate:.0f}; consumer lag series: {len(lag)}')
            assert rate > 0 and {r['metric']['topic'] for r in lag} == {'market.quotes', 'market.trades'}
            pub.join()
            # every event of the window was counted, once, by the fleet (the reference counts the rows itself)
            counted = lambda: value(api, 'sum(velox_events_total{stage="detect"})')
            try: api.wait('every event counted', lambda: counted() == n_events, timeout=60)
            except Exception: pytest.fail(f'the fleet counted {counted()} events, the window has {n_events}')
            api.wait('the lag to drain', lambda: value(api, 'sum(velox:consumer_lag:sum{group="velox-detect"})') == 0, timeout=30)

            # a replay is years behind the wall clock, yet no event-time alert: the fleet says mode replay
            assert value(api, 'max(velox_event_time_lag_seconds)') > 365 * 86400
            assert not [a for a in api.alerts() if a['labels']['alertname'] in LIVE_ONLY]

            # a poison message: the dead-letter alert fires for real
            bus.produce('market.trades', b'\x00 not an Arrow IPC message', key='IBM'); bus.flush()
            dlq = api.wait('the dead-letter alert', lambda: firing(api, 'VeloxDeadLetters', topic='market.trades'), timeout=60)
            print('dead-letter alert:', dlq[0]['labels']['member'])

            # every recording rule returns data, and every series an alert reads exists (but the two a detect fleet never has)
            for name in RECORDING: assert api.query(name), f'recording rule {name} returned no data'
            for a in ALERTS:
                if a.name in NOT_IN_A_DETECT_FLEET: continue
                for m in metric_names(a.expr): assert api.query(m), f'{a.name}: {m} has no data'
            # ... and moved: no gauge that never changed counts (consumer lag is measured, but two members keep up with
            # this window: it may read 0 at every scrape, so it is not asked to move)
            for expr in ('velox_events_total', 'velox_consumed_messages_total', 'velox_produced_events_total', 'velox_batch_seconds_count',
                         'velox_event_time_lag_seconds', 'process_resident_memory_bytes'):
                assert api.query(f'changes({expr}[5m]) > 0'), f'{expr} never changed'

            # the dashboard: every panel's query names metrics the workers really export (the names scraped from them here)
            exported = {r['metric']['__name__'] for r in api.query('count by (__name__) ({job="velox"})')}
            exported |= declared(urllib.request.urlopen(f"http://{targets[0]['targets'][0]}/metrics").read().decode())  # also those with no sample yet
            print(f'{len(exported)} metric names exported by the workers')
            for title, q in panel_queries(dashboard()):
                unknown = metric_names(q) - exported - set(RECORDING) - {'ALERTS'}
                assert not unknown, f'panel {title!r}: {unknown} is not exported by the workers'
                if title not in PANELS_NOT_IN_A_DETECT_FLEET: assert api.query(q), f'panel {title!r}: {q} returned no data'

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
        finally:
            fleet_stop(fd, timeout=60)
            services_down(sd)
            hook.srv.shutdown()
