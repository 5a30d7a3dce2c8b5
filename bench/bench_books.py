"""Nanoseconds per L2 book update with N symbols' depth updates interleaved (default 2,000): one compiled call over
the interleaved stream (`L2Books`) against one `L2Book` per symbol (a Python dispatch per update, or per chunk a
regrouping by symbol) and against the same books fed symbol by symbol (no interleaving: the single-book bound).

    python bench/bench_books.py [--symbols 2000] [--rows 5000] [--chunk 1024] [--repeat 3]
    python bench/bench_books.py --smoke     (20 symbols x 1,000 updates)
    velox bench books ...

The stream: symbol i replays `--rows` consecutive updates of a real Binance depth capture (BTCUSDT or ETHUSDT
2024-08-08, drawn with a seed, from a seeded offset), its times moved so that every symbol's updates spread over the
same span; all symbols merged in time order (the interleaving a market feed has). Prices are as recorded (each
book keeps its capture's tick). Before timing, the interleaved path's top of book after every update is checked
equal to each symbol's own `L2Book` fed only its rows. Nothing is asserted about speed; the issue's target: a
median <= 300 ns/update with 2,000 symbols interleaved.
"""
from __future__ import annotations
import argparse, gc, os, platform, time
from pathlib import Path
import numpy as np

from velox.feeds.recorded import binance_depth
from velox.market.book import L2Book, infer_tick
from velox.market.books import L2Books

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = [ROOT / 'replay/data/binance/btcusdt_20240808_spot.gz', ROOT / 'replay/data/binance/ethusdt_20240808_spot.gz']
SMOKE = dict(symbols=20, rows=1000, repeat=1, python_rows=5000, regroup_rows=20_000)
TARGET_NS = 300
WINDOW = 1 << 12  # dense ticks per book, the same for L2Books and the L2Book references (2,000 x 2 x 4,096 x 8 B = 131 MB)
ROW = np.dtype([('side', 'i1'), ('price', '<i8'), ('size', '<f8')])


def machine() -> str:
    import numba
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · numba {numba.__version__}")


def market(n:int, rows:int, seed:int=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    "(book index per update, updates (side, price, size), tick per book): `n` symbols' copies interleaved in time."
    caps = []
    for p in CAPTURES:
        d = binance_depth(p)
        d = d[d['side'] != 0]  # snapshot resets are per capture: a copy starting mid-stream has none
        caps.append((d, infer_tick(d['price'])))
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(caps), n)
    books, ts, parts = [], [], []
    span = max(int(d['ts'][-1] - d['ts'][0]) for d, _ in caps)
    for i, c in enumerate(src):
        d = caps[c][0]
        off = int(rng.integers(0, len(d) - rows))
        part = d[off:off + rows]
        t = part['ts'] - part['ts'][0]
        t = t * (span / max(1, int(t[-1]))) if t[-1] else t  # every copy over the same span: interleaved throughout
        ts.append(t + rng.integers(0, 1000)); books.append(np.full(rows, i, np.int64))
        p = np.empty(rows, ROW)
        for f in ROW.names: p[f] = part[f]
        parts.append(p)
    order = np.argsort(np.concatenate(ts), kind='stable')
    return np.concatenate(books)[order], np.concatenate(parts)[order], np.array([caps[c][1] for c in src], np.int64)


def check(book, b, ticks):
    "The interleaved path's top after every update = each symbol's own L2Book over its rows alone."
    top = L2Books(ticks, WINDOW).apply(book, b)
    for i, tick in enumerate(ticks):
        mine = book == i
        ref = L2Book(int(tick), WINDOW).apply(b[mine])
        if top[mine].tolist() != ref.tolist():
            j = int(np.flatnonzero(top[mine] != ref)[0])
            raise AssertionError(f"book {i}: interleaved top differs from its own L2Book at its update {j}")


def chunked(fn, book, b, rows:int) -> np.ndarray:
    "ns/update of each `rows`-update chunk through `fn(book_chunk, b_chunk)`."
    out = []
    gc.collect(); gc.disable()
    try:
        for s in range(0, len(b), rows):
            bk, part = book[s:s + rows], b[s:s + rows]
            t0 = time.perf_counter_ns(); fn(bk, part); out.append((time.perf_counter_ns() - t0) / len(part))
    finally: gc.enable()
    return np.array(out)


def regrouped(books:list):
    "Per chunk: group the updates by symbol (stable) and apply each group to its symbol's L2Book."
    def run(bk, part):
        order = np.argsort(bk, kind='stable')
        sb = bk[order]
        cuts = np.flatnonzero(np.diff(sb)) + 1
        for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(sb)]):
            books[sb[s]].apply(part[order[s:e]])
    return run


def dispatched(books:list):
    "Per update: the symbol's L2Book.update (rows as Python scalars, converted outside the timer)."
    def run(rows):
        for k, side, px, sz in rows: books[k].update(side, px, sz)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_books', description=__doc__.split('\n')[0])
    p.add_argument('--symbols', type=int, default=2000, help='symbols (books) interleaved (default 2000)')
    p.add_argument('--rows', type=int, default=5000, help='updates per symbol (default 5000)')
    p.add_argument('--chunk', type=int, default=1024, help='updates per timed chunk (default 1024)')
    p.add_argument('--repeat', type=int, default=3, help='best of R for the one-call rows (default 3)')
    p.add_argument('--python-rows', type=int, default=200_000, help='updates timed through the per-update Python path (default 200,000)')
    p.add_argument('--regroup-rows', type=int, default=1_000_000, help='updates timed through the regrouping path (default 1,000,000)')
    p.add_argument('--seed', type=int, default=0, help='seed of the stream (default 0)')
    p.add_argument('--smoke', action='store_true', help='20 symbols x 1,000 updates, one run per row: every check and the table')
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    print(f"velox bench books{' · smoke' if a.smoke else ''} · {a.symbols:,} symbols x {a.rows:,} updates interleaved · "
          f"chunks of {a.chunk} · machine: {machine()}\n")
    book, b, ticks = market(a.symbols, a.rows, a.seed)
    L2Books(ticks[:1]).apply(book[:50] * 0, b[:50]); L2Book(int(ticks[0])).apply(b[:50])  # compile outside the timers
    check(book, b, ticks)
    print(f"{len(b):,} updates; the interleaved path's top after every update equals each symbol's own L2Book\n")
    rows = []
    best = min(_once(lambda: L2Books(ticks, WINDOW), book, b) for _ in range(a.repeat))
    rows.append(('L2Books.apply, interleaved, one call', len(b), best, best))
    bs = L2Books(ticks, WINDOW)
    ns = chunked(bs.apply, book, b, a.chunk)
    rows.append((f'L2Books.apply, interleaved, per {a.chunk}-update chunk', len(b), np.median(ns), ns.mean()))
    rows.append((f'  (memory of {a.symbols:,} books: {bs.nbytes / 2**20:,.0f} MB)', None, None, None))
    r = min(len(b), a.regroup_rows)
    ns = chunked(regrouped([L2Book(int(t), WINDOW) for t in ticks]), book[:r], b[:r], a.chunk)
    rows.append((f'one L2Book per symbol, each chunk regrouped (first {r:,})', r, np.median(ns), ns.mean()))
    m = min(len(b), a.python_rows)
    per = [L2Book(int(t), WINDOW) for t in ticks]
    tup = [list(zip(book[s:min(m, s + a.chunk)].tolist(), *(b[f][s:min(m, s + a.chunk)].tolist() for f in ROW.names)))
           for s in range(0, m, a.chunk)]
    out = []
    gc.collect(); gc.disable()
    try:
        run = dispatched(per)
        for rws in tup:
            t0 = time.perf_counter_ns(); run(rws); out.append((time.perf_counter_ns() - t0) / len(rws))
    finally: gc.enable()
    ns = np.array(out)
    rows.append((f'one L2Book per symbol, Python dispatch per update (first {m:,})', m, np.median(ns), ns.mean()))
    t = 0.0
    for i, tick in enumerate(ticks):
        mine = b[book == i]
        bk = L2Book(int(tick), WINDOW); t0 = time.perf_counter_ns(); bk.apply(mine); t += time.perf_counter_ns() - t0
    rows.append(('bound: each symbol alone, one L2Book.apply call each', len(b), t / len(b), t / len(b)))
    ref = rows[3][3]
    head = f"{'path':<62} {'updates':>11} {'median ns':>10} {'mean ns':>9} {'vs regrouped':>13}"
    print(head); print('-' * len(head))
    for name, n, med, mean in rows:
        if n is None: print(name); continue
        print(f"{name:<62} {n:>11,} {med:>10.0f} {mean:>9.0f} {ref / mean:>12.2f}x")
    print(f"\nns = ns/update (perf_counter_ns); median/mean over {a.chunk}-update chunks (one-call rows: best of {a.repeat} "
          f"whole-stream calls, median = mean). vs regrouped = the regrouping path's mean over this path's mean. Target: "
          f"<= {TARGET_NS} ns/update median, {a.symbols:,} symbols interleaved. Measured, not asserted.")


def _once(make, book, b) -> float:
    bs = make()
    gc.collect()
    t0 = time.perf_counter_ns(); bs.apply(book, b); return (time.perf_counter_ns() - t0) / len(b)


if __name__ == '__main__':
    main()
