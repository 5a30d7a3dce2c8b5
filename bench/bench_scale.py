"""A whole market in one process: N synthetic symbols (default 2,000) x one market hour through detect + features +
hot state, streamed from the Parquet catalog in bounded memory.

    python bench/bench_scale.py [--symbols 2000] [--start 10:00 --end 11:00] [--group 100] [--window-s 300] [--hot redis]
    python bench/bench_scale.py --smoke      (12 symbols x 10 minutes, groups of 6, hot state in memory)
    velox bench scale ...

The input is a synthetic session (`velox data synth`: recorded IBM/BAC symbol-days re-keyed SYN00000.., time-shifted
and price-scaled; see velox.feeds.synth), built once into `--catalog` (default a folder under the temporary directory,
reused while its manifest matches). The run reads the catalog in groups of `--group` symbols and, within a group, in
event-time windows of `--window-s` seconds (each partition read forward a row group of 8,192 rows at a time), and
feeds each window to one stage: the product's detect stage (NBBO -> dark-pool kinds) chained with FeatureStage
(indicators per 1m/5m/15m/1h bar), while a HotSink keeps L1 and the last 1,000 prints per symbol in the hot state
(a redis-server started here with --hot redis; `MemoryHot` with --hot memory). Only alerts are kept; everything else
is counted. Memory is bounded by the group and window, not by the number of symbols or the length of the day: the
table gives the peak RSS after half the period and after all of it (the half runs first; RSS peaks never fall).

Before timing, the streamed outputs (alerts and indicators, as sets of rows) are checked against `run_frame` over
the same data held at once (every symbol of the smoke run; in a full run the first group over its first 10 minutes).
Nothing is asserted about speed; the issue's targets: RSS < 2 GB, hot state < 256 MB for 2,000 symbols.
"""
from __future__ import annotations
import argparse, gc, json, os, platform, resource, shutil, tempfile, time
from pathlib import Path
import numpy as np

from velox.core import NS, clock_ns
from velox.detect.params import detect_stage
from velox.events import DTYPES
from velox.feeds.arrow import from_arrow
from velox.feeds.parquet import ParquetCatalog, ParquetSource
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource
from velox.feeds.synth import SYNTH_FILE, recorded_pool, synth_catalog
from velox.market.features import FeatureStage
from velox.runtime.runners import run_frame
from velox.stage import Chain

ROOT = Path(__file__).resolve().parent.parent
SMOKE = dict(symbols=12, start='10:00', end='10:10', group=6, window_s=120, hot='memory', check_minutes=10)
KINDS = ('quote', 'trade')


def machine() -> str:
    return f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · numpy {np.__version__}"


def rss_mb() -> tuple[float, float]:
    "(current, peak) resident set of this process, MB."
    cur = peak = 0.0
    for ln in open('/proc/self/status'):
        if ln.startswith('VmRSS:'): cur = int(ln.split()[1]) / 1024
        elif ln.startswith('VmHWM:'): peak = int(ln.split()[1]) / 1024
    return cur, peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage():
    "The workload: the product's detect stage and the seed features, one chain (every stage windowed)."
    return Chain(detect_stage(), FeatureStage())


def session(root:Path, n:int, seed:int, start:str, end:str, data_dir:Path, progress:bool=True) -> tuple[ParquetCatalog, float]:
    "The synthetic catalog for these settings (built unless `root` already holds it); (catalog, seconds spent building)."
    want = {'n': n, 'seed': seed, 'window': [start, end]}
    have = root / SYNTH_FILE
    if have.exists():
        m = json.loads(have.read_text())
        if {'n': len(m['symbols']), 'seed': m['seed'], 'window': m['window']} == want: return ParquetCatalog(root), 0.0
        shutil.rmtree(root)
    t0 = time.perf_counter()
    cat = ParquetCatalog(root, row_group_rows=8192)
    rep = synth_catalog(Catalog(data_dir), cat, n, seed, window=(start, end), pool=recorded_pool(Catalog(data_dir)),
                        progress=progress)
    print(f"built: {rep.text()} in {time.perf_counter() - t0:.0f} s")
    return cat, time.perf_counter() - t0


class Counted:
    "Outputs of a streamed run: rows per kind, the rows of `keep` kinds."
    def __init__(self, keep=('alert',)): self.n, self.kept, self.keep = {}, {}, keep
    def add(self, items):
        for k, b in items:
            self.n[k] = self.n.get(k, 0) + len(b)
            if k in self.keep: self.kept.setdefault(k, []).append(b)
    def rows(self, kind) -> np.ndarray | None:
        parts = self.kept.get(kind)
        return np.concatenate(parts) if parts else None


class Cursor:
    """One partition of the catalog read forward, a row group at a time: `until(t)` returns its rows before `t` and
    holds at most one decoded row group (the files are in event-time order)."""
    def __init__(self, cat:ParquetCatalog, kind:str, symbol:str, day:str):
        import pyarrow.parquet as pq
        self.kind, self.buf = kind, None
        files = sorted(cat.partition_dir(kind, symbol, day).glob('part-*.parquet'))
        self.batches = (rb for f in files for rb in pq.ParquetFile(f, memory_map=True).iter_batches(batch_size=8192))

    def until(self, t:int) -> np.ndarray:
        parts = []
        while True:
            if self.buf is None:
                rb = next(self.batches, None)
                if rb is None: break
                self.buf = from_arrow(rb, self.kind)[1]
            k = int(np.searchsorted(self.buf['ts'], t, 'left'))
            if k: parts.append(self.buf[:k])
            if k < len(self.buf):
                self.buf = self.buf[k:]
                break
            self.buf = None
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, DTYPES[self.kind])


def stream(cat:ParquetCatalog, symbols:list, lo:int, hi:int, group:int, window_s:int, hot_sink=None, keep=('alert',), progress=False, day=None, report=None):
    """Feed [lo, hi) of `symbols` to a fresh `stage()` per group of `group` symbols, `window_s` seconds at a time, each
    partition read forward by a `Cursor`; (events, Counted outputs, seconds reading the catalog)."""
    out, events, t_read = Counted(keep), 0, 0.0
    day = day or cat.days()[0]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(symbols), unit='sym', desc='scale', leave=False)
    for g in range(0, len(symbols), group):
        syms, st = symbols[g:g + group], stage()
        cursors = {k: [Cursor(cat, k, s, day) for s in syms] for k in KINDS}
        for c in cursors['quote'] + cursors['trade']: c.until(lo)  # skip what comes before the period
        for w0 in range(lo, hi, window_s * NS):
            t0 = time.perf_counter()
            w1 = min(hi, w0 + window_s * NS)
            items = [(k, b) for k in KINDS for b in (c.until(w1) for c in cursors[k]) if len(b)]  # one run per symbol:
            # the stages split a batch by symbol, and a one-symbol batch needs no sort of its text symbols
            t_read += time.perf_counter() - t0
            events += sum(len(b) for _, b in items)
            made = st.process_window(items)
            out.add(made)
            if hot_sink is not None:
                for k, b in (*items, *made):
                    if k in ('nbbo', 'trade', 'bar') and len(b): hot_sink.write(k, b)
        del cursors
        made = st.flush()
        out.add(made)
        if hot_sink is not None:
            for k, b in made:
                if k in ('nbbo', 'bar') and len(b): hot_sink.write(k, b)
        if bar is not None: bar.update(len(syms))
        if report is not None: report(g + len(syms), events)
    if hot_sink is not None: hot_sink.flush()
    if bar is not None: bar.close()
    return events, out, t_read


def as_set(b) -> set:
    "Rows as a set of tuples (NaN made comparable)."
    if b is None: return set()
    return {tuple('nan' if isinstance(v, float) and v != v else v for v in r) for r in b.tolist()}


def check(cat, symbols, lo, hi, group, window_s) -> dict:
    "Streamed outputs (alerts, indicators) equal run_frame's over the same data held at once; the counts compared."
    _, got, _ = stream(cat, symbols, lo, hi, group, window_s, keep=('alert', 'indicator'))
    day = cat.days()[0]
    srcs = [ArraySource(k, s, ParquetSource(cat, k, s, day).load(lo, hi)) for s in symbols for k in KINDS]  # the catalog's own reader
    ref = run_frame(stage(), [s for s in srcs if len(s.data)], collect=('alert', 'indicator'))
    bad = []
    for kind in ('alert', 'indicator'):
        a, b = as_set(got.rows(kind)), as_set(ref.outputs.get(kind))
        if not b: bad.append(f"{kind}: the reference has none: the check would compare nothing")
        elif a != b: bad.append(f"{kind}: streamed {len(a):,} rows, run_frame {len(b):,}; {len(a - b)} only streamed, {len(b - a)} only run_frame")
    if bad: raise AssertionError('streamed outputs differ from run_frame over the same data:\n  ' + '\n  '.join(bad))
    return {k: len(as_set(ref.outputs.get(k))) for k in ('alert', 'indicator')}


class Hot:
    "The hot state: a redis-server started here, or MemoryHot."
    def __init__(self, how:str): self.how, self.svc = how, None
    def __enter__(self):
        if self.how == 'redis':
            from velox.infra.services import start_redis
            from velox.infra.redis_hot import RedisHot
            self.svc = start_redis(state_dir=tempfile.mkdtemp(prefix='velox-scale-redis-'))
            self.store = RedisHot(self.svc.dsn)
        else:
            from velox.infra.hot import MemoryHot
            self.store = MemoryHot()
        return self
    def reset(self):
        "Empty the hot state (each run starts from nothing)."
        if self.svc is not None: self.store.r.flushdb()
        else:
            from velox.infra.hot import MemoryHot
            self.store = MemoryHot()
    def __exit__(self, *exc):
        if self.svc is not None: self.svc.stop()


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_scale', description=__doc__.split('\n')[0])
    p.add_argument('--symbols', type=int, default=2000, help='synthetic symbols (default 2000)')
    p.add_argument('--start', default='10:00', help='New York time the period starts (default 10:00)')
    p.add_argument('--end', default='11:00', help='New York time it ends, exclusive (default 11:00: one market hour)')
    p.add_argument('--seed', type=int, default=0, help='seed of the synthetic session (default 0)')
    p.add_argument('--group', type=int, default=100, help='symbols per group read and processed together (default 100)')
    p.add_argument('--window-s', type=int, default=300, help='seconds of event time per window (default 300)')
    p.add_argument('--hot', choices=['redis', 'memory'], default='redis', help='hot state: a redis-server started here (default) or in memory')
    p.add_argument('--catalog', help='the synthetic catalog folder (default: under the temporary directory, kept and reused)')
    p.add_argument('--check-symbols', type=int, default=20, help='symbols checked against run_frame in a full run (default 20)')
    p.add_argument('--check-minutes', type=int, default=10, help='minutes of the first group checked against run_frame (default 10)')
    p.add_argument('--no-half', dest='half', action='store_false', help='skip the first run over half the period (it shows '
                   'that peak RSS does not grow with the period; tests/test_scale.py checks that on a small session)')
    p.add_argument('--smoke', action='store_true', help='12 symbols x 10 minutes in groups of 6, hot state in memory, every check')
    p.add_argument('--data-dir', default=str(ROOT / 'replay' / 'data'), help='recorded data root (default: replay/data here)')
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    tmp = None
    if a.smoke: root = Path(tmp := tempfile.mkdtemp(prefix='velox-scale-')) / 'synth'
    else: root = Path(a.catalog or Path(tempfile.gettempdir()) / f"velox-synth-{a.symbols}-{a.seed}-{a.start.replace(':', '')}-{a.end.replace(':', '')}")
    print(f"velox bench scale{' · smoke' if a.smoke else ''} · {a.symbols:,} synthetic symbols x {a.start}-{a.end} New York · "
          f"groups of {a.group}, windows of {a.window_s} s · hot state: {a.hot}")
    print(f"machine: {machine()}\n")
    try:
        cat, t_build = session(root, a.symbols, a.seed, a.start, a.end, Path(a.data_dir), not a.smoke)
        day = cat.days()[0]
        symbols = cat.symbols()
        # the session's bounds: the source window moved by each copy's shift (jitter of up to 300 s either side)
        lo, hi = clock_ns(day, a.start) - 301 * NS, clock_ns(day, a.end) + 301 * NS
        mid = lo + (hi - lo) // 2
        n_chk = min(len(symbols), a.check_symbols)
        chk_hi = hi if a.smoke else min(hi, lo + (a.check_minutes + 5) * 60 * NS)
        counts = check(cat, symbols[:len(symbols) if a.smoke else n_chk], lo, chk_hi, max(1, a.group // 2), a.window_s)
        print(f"check: streamed = run_frame on {len(symbols) if a.smoke else n_chk} symbols: {counts['alert']:,} alerts, "
              f"{counts['indicator']:,} indicator rows\n")
        rows = []
        with Hot(a.hot) as hot:
            from velox.infra.sinks import HotSink
            gc.collect(); base = rss_mb()[0]
            for name, end in ((('first half of the period', mid),) if a.half else ()) + (('the whole period', hi),):
                hot.reset()
                sink = HotSink(hot.store, cap=1000, notify=False)
                gc.collect()
                t0 = time.perf_counter()
                def report(k, n, t0=t0, name=name):  # a line per group: a long run stopped early still says what it measured
                    if a.smoke: return
                    t = time.perf_counter() - t0
                    print(f"  {name}: {k:,} symbols, {n:,} events, {t:,.0f} s, {n / t:,.0f} events/s, peak RSS {rss_mb()[1]:,.0f} MB, "
                          f"hot {hot.store.used_memory() / 2**20:,.1f} MB", flush=True)
                n, out, t_read = stream(cat, symbols, lo, end, a.group, a.window_s, sink, progress=not a.smoke, day=day, report=report)
                t = time.perf_counter() - t0
                cur, peak = rss_mb()
                rows.append((name, n, t, t_read, out.n.get('alert', 0), out.n.get('indicator', 0), cur, peak, hot.store.used_memory()))
        print(f"{'run':<28}{'events':>13}{'seconds':>9}{'events/s':>12}{'of which read s':>16}{'alerts':>9}{'indicators':>11}"
              f"{'RSS MB':>8}{'peak RSS MB':>12}{'hot MB':>8}")
        for name, n, t, tr, al, ind, cur, peak, hotb in rows:
            print(f"{name:<28}{n:>13,}{t:>9.1f}{n / t:>12,.0f}{tr:>16.1f}{al:>9,}{ind:>11,}{cur:>8.0f}{peak:>12.0f}{hotb / 2**20:>8.1f}")
        print(f"\nRSS before streaming {base:.0f} MB (imports, JIT, the check). Events/s = input quotes + trades per wall second, "
              f"reading Parquet included. hot MB = the hot state's memory after the run ({'Redis used_memory' if a.hot == 'redis' else 'MemoryHot estimate'}). "
              f"Catalog built in {t_build:.0f} s ({'reused' if not t_build else 'this run'}). Targets: RSS < 2 GB, hot < 256 MB.")
    finally:
        if tmp: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
