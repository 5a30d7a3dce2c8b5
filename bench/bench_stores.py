"""Write throughput of the stores: ClickHouse (embedded chDB) through StoreSink against a naive row-by-row insert loop,
and Redis through HotSink (pipelines) against a naive per-command loop, in the same run on the same real data.

    python bench/bench_stores.py [--symbols IBM,BAC] [--day 2013-10-08] [--sample 300] [--redis-sample 3000]
                                 [--budget-symbols 2000] [--budget-mb 8] [--start HH:MM --end HH:MM]
    python bench/bench_stores.py --smoke     (IBM, 10:00-10:30 New York; small samples and budget: every check and the table)

The naive loops are far too slow to run on a whole day: they run on the first `--sample` rows and their time for the
whole day is extrapolated linearly from that sample (the table says so in its `note` column). Each sink row is
checked to leave the same stored state as the data (ClickHouse: every row read back equal; Redis: the last L1 and
prints per symbol), so the rates compare the same work. A last Redis row streams the same rows renamed to
`--budget-symbols` synthetic symbols through a HotSink with a `--budget-mb` memory budget, while a second connection
samples `INFO memory` (its commands are not counted): the note gives the peak and the symbols evicted.
Nothing is asserted about speed; see bench/README.md.
"""
from __future__ import annotations
import argparse, gc, os, platform, shutil, tempfile, threading, time
import numpy as np

from velox.core import clock_ns
from velox.events import to_dicts
from velox.feeds.recorded import Catalog
from velox.market.nbbo import consolidated_nbbo
from velox.feeds.replay import ArraySource, Replay
from velox.infra.sinks import HotSink, StoreSink
from velox.infra.redis_hot import RedisHot
from velox.infra.stores import Store, table_for

SMOKE = dict(symbols='IBM', start='10:00', end='10:30', sample=50, redis_sample=300, budget_symbols=200,
             budget_mb=1.5)  # --smoke: small, every check, the table; a budget small enough to evict


def windows(srcs):
    "(kind, batch) as the in-process runner hands them to sinks: one slice per source per replay window."
    return [(src.kind, b) for w in Replay(srcs).windows(ordered=False) for src, b in w]


def machine() -> str:
    import chdb, redis
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · chdb {chdb.__version__} · redis-py {redis.__version__}")


def table(rows) -> str:
    "rows: (name, rows, seconds, redis commands or None, note)."
    head = f"{'run':<48} {'rows':>10} {'seconds':>9} {'rows/s':>12} {'cmds/s':>10} {'vs naive':>9}  note"
    out, naive = [head, '-' * len(head)], {}
    for name, n, sec, cmds, note in rows:
        rate = n / sec
        group = name.split(':')[0]
        if 'naive' in name: naive[group] = rate
        ratio = f"{rate / naive[group]:8.1f}x" if group in naive and 'naive' not in name else ''
        c = f"{cmds / sec:>10,.0f}" if cmds else f"{'':>10}"
        out.append(f"{name:<48} {n:>10,} {sec:>9.3f} {rate:>12,.0f} {c} {ratio:>9}  {note}")
    return '\n'.join(out)


def bench_clickhouse(srcs, sample:int) -> list:
    rows, d = [], tempfile.mkdtemp(prefix='velox-bench-stores-')
    n = sum(len(s.data) for s in srcs)
    try:
        with Store(f'chdb://{d}/chdb').migrate() as st:
            st.insert('trade', srcs[0].data[:10] if srcs[0].kind == 'trade' else srcs[1].data[:10])  # warm up
            # naive: one INSERT per row, on a sample, extrapolated
            first = srcs[0]
            b = first.data[:sample]
            names, table_name = list(b.dtype.names), table_for(first.kind).name
            gc.collect(); t0 = time.perf_counter()
            for row in b.tolist(): st.client.insert(table_name, [list(row)], column_names=names)
            t_row = (time.perf_counter() - t0) / len(b)
            rows.append(('clickhouse: naive row-by-row INSERT loop', n, t_row * n, None, f'extrapolated from {len(b)} rows'))
            st.client.command(f'TRUNCATE TABLE {table_name}')
            w = windows(srcs)
            gc.collect(); t0 = time.perf_counter()
            sink = StoreSink(st, kinds=None, batch_rows=50_000)
            for kind, b in w: sink.write(kind, b)
            sink.close()
            t_sink = time.perf_counter() - t0
            for s in srcs: assert np.array_equal(st.read(s.kind, s.symbol), s.data), s.key
            rows.append(('clickhouse: StoreSink (50k-row columnar batches)', n, t_sink, None, f'{len(w):,} runner batches in'))
            gc.collect(); t0 = time.perf_counter()
            for s in srcs: st.insert(s.kind, s.data)
            rows.append(('clickhouse: Store.insert, one insert per stream', n, time.perf_counter() - t0, None, 're-insert (dedup)'))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return rows


def _cmds(r) -> int: return int(r.info('stats')['total_commands_processed'])


def bench_redis(srcs, sample:int, n_symbols:int=2000, budget_mb:float=8) -> list:
    from velox.infra.services import start_redis
    nb_srcs = [ArraySource('nbbo', s.symbol, consolidated_nbbo(s.data)[0], key=f'{s.symbol}/nbbo') for s in srcs if s.kind == 'quote']
    hot_srcs = nb_srcs + [s for s in srcs if s.kind == 'trade']
    n = sum(len(s.data) for s in hot_srcs)
    rows = []
    with start_redis() as svc:
        rh = RedisHot(svc.dsn)
        # naive: the same state kept per event, one command per field update: HSET per NBBO row, LPUSH+LTRIM+EXPIRE per print
        w = windows(hot_srcs)
        flat = [(k, b[i:i + 1]) for k, b in w for i in range(len(b))][:sample]
        gc.collect(); c0 = _cmds(rh.r); t0 = time.perf_counter()
        for kind, b in flat:
            d = to_dicts(b, kind)[0]
            if kind == 'nbbo': rh.r.hset(f"l1:{d['symbol']}", mapping={k: str(v) for k, v in d.items()})
            else:
                key = f"ticks:{d['symbol']}"
                rh.r.lpush(key, str(d)); rh.r.ltrim(key, 0, 999); rh.r.expire(key, 86400)
        t = time.perf_counter() - t0; c = _cmds(rh.r) - c0
        rows.append(('redis: naive per-command loop', n, t / len(flat) * n, c / len(flat) * n, f'extrapolated from {len(flat)} events'))
        rh.r.flushdb()
        gc.collect(); c0 = _cmds(rh.r); t0 = time.perf_counter()
        sink = HotSink(rh, cap=1000)
        for kind, b in w: sink.write(kind, b)
        sink.close()
        t = time.perf_counter() - t0; c = _cmds(rh.r) - c0
        for s in hot_srcs:  # the state a dashboard reads is the data's last L1 and last 1,000 prints
            if s.kind == 'nbbo': assert rh.get_l1(s.symbol) == to_dicts(s.data[-1:], 'nbbo')[0]
            else: assert rh.ticks(s.symbol, 1000) == to_dicts(s.data[-1000:][::-1], 'trade')
        rows.append(('redis: HotSink (pipelines, last rows per symbol)', n, t, c, f'{len(w):,} runner batches in'))
        rows.append(bench_redis_budget(rh, w, n_symbols, budget_mb))
        rh.close()
    return rows


class MemorySampler(threading.Thread):
    "Samples Redis `used_memory` from its own connection every `every_s` until stopped; `peak`, `n` (INFO calls)."
    def __init__(self, url:str, every_s:float=0.001):
        import redis
        super().__init__(daemon=True)
        self.r, self.every_s, self.peak, self.n, self._done = redis.Redis.from_url(url), every_s, 0, 0, threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, int(self.r.info('memory')['used_memory'])); self.n += 1
            time.sleep(self.every_s)

    def stop(self): self._done.set(); self.join(); self.r.close()


def renamed(w, n_symbols:int, seed:int=0) -> list:
    "The same batches, each row renamed to one of `n_symbols` synthetic symbols (Zipf-like: a few busy, many quiet)."
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, n_symbols + 1) ** 0.8
    names = np.array([f'SYN{i:04d}' for i in range(n_symbols)])
    out = []
    for kind, b in w:
        b = b.copy(); b['symbol'] = names[rng.choice(n_symbols, len(b), p=p / p.sum())]; out.append((kind, b))
    return out


def bench_redis_budget(rh, w, n_symbols:int, budget_mb:float):
    "HotSink over `n_symbols` symbols under a memory budget, peak memory sampled all along."
    ws = renamed(w, n_symbols)
    n = sum(len(b) for _, b in ws)
    rh.r.flushdb()
    sampler = MemorySampler(rh.url); sampler.start()
    gc.collect(); c0 = _cmds(rh.r); t0 = time.perf_counter()
    sink = HotSink(rh, cap=200, every_rows=8192, budget_mb=budget_mb)
    for kind, b in ws: sink.write(kind, b)
    sink.close()
    t = time.perf_counter() - t0
    sampler.stop()
    c = _cmds(rh.r) - c0 - sampler.n - 1  # less the sampler's INFO calls and this one
    after = rh.used_memory() / 2**20
    rh.r.flushdb()
    return (f'redis: HotSink, {n_symbols:,} symbols, {budget_mb:g} MB budget', n, t, c,
            f'peak {sampler.peak / 2**20:.2f} MB sampled, {after:.2f} MB at the end, {sink.evicted:,} evictions')


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_stores', description=__doc__.split('\n')[0])
    p.add_argument('--day', default='2013-10-08')
    p.add_argument('--symbols', default='IBM,BAC')
    p.add_argument('--sample', type=int, default=300, help='rows for the naive ClickHouse loop (default 300)')
    p.add_argument('--redis-sample', type=int, default=3000, help='events for the naive Redis loop (default 3000)')
    p.add_argument('--budget-symbols', type=int, default=2000, help='synthetic symbols for the budgeted Redis row (default 2000)')
    p.add_argument('--budget-mb', type=float, default=8, help='memory budget of the budgeted Redis row (default 8)')
    p.add_argument('--start', help='only rows from this New York time (HH:MM; default: the whole day)')
    p.add_argument('--end', help='only rows before this New York time (HH:MM)')
    p.add_argument('--smoke', action='store_true', help='a small real input (IBM, 10:00-10:30) and small samples: every '
                   'check and the table (the test command runs this)')
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'replay', 'data')
    p.add_argument('--data-dir', default=os.path.normpath(here))
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    cat = Catalog(a.data_dir)
    symbols = [s.strip().upper() for s in a.symbols.split(',') if s.strip()]
    lo = clock_ns(a.day, a.start, '--start') if a.start else -2**62
    hi = clock_ns(a.day, a.end, '--end') if a.end else 2**62
    cut = lambda b: b[(b['ts'] >= lo) & (b['ts'] < hi)]
    srcs = [ArraySource(s.kind, s.symbol, cut(s.load()), key=s.key) for sym in symbols for s in cat.find(sym, a.day)]
    span = f" · {a.start or 'open'}-{a.end or 'close'} New York" if a.start or a.end else ''
    print(f"velox bench stores{' · smoke' if a.smoke else ''} · {','.join(symbols)} · {a.day}{span}")
    print(f"machine: {machine()}\n")
    rows = bench_clickhouse(srcs, a.sample) + bench_redis(srcs, a.redis_sample, a.budget_symbols, a.budget_mb)
    print(table(rows))
    print("\nclickhouse rows = quotes + trades; redis rows = NBBO updates + trades. seconds = one wall time (perf_counter). "
          "cmds/s = Redis commands processed (INFO stats). Naive rows: timed on a sample, extrapolated linearly to all the rows.")


if __name__ == '__main__':
    main()
