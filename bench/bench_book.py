"""Nanoseconds per L2 book update: the numba batch path, the per-update Python path and pure-Python dict books.

    python bench/bench_book.py [--synthetic N] [--chunk ROWS] [--repeat R] [--capture-rows N]
    python bench/bench_book.py --smoke     (the first 20,000 BTCUSDT updates, 20,000 synthetic, one call per row)

Streams: the BTCUSDT depth capture sequenced by Binance's snapshot rule (`binance_depth`), and a synthetic
stream of N updates (default 1M) around a random-walk mid. Each stream is cut into chunks of ROWS updates
(default 1024); every chunk is timed on its own (`perf_counter_ns`) and the table gives the median and the
mean of ns/update over the chunks (the mean is total time / updates). Chunk timing includes the per-call cost
of `L2Book.apply` (checks, output allocation); the `one call` rows time a whole stream in a single `apply`,
best of R (that includes writing a stream-long output array). Before timing, every path is checked to reach the same top of book. Nothing is asserted
about speed; the issue's target is <= 300 ns/update median for the batch path.
"""
from __future__ import annotations
import argparse
import gc
import os
import platform
import time
from pathlib import Path

import numpy as np

from velox.feeds.recorded import binance_depth
from velox.market.book import L2Book, infer_tick
from velox.events import batch

TARGET_NS = 300
SMOKE = dict(synthetic=20_000, capture_rows=20_000, repeat=1, brute_rows=2_000)  # --smoke: small, every check, the table


class DictBook:
    "Pure-Python reference: a dict per side, the best kept incrementally, rescanned with max/min when it empties."
    def __init__(self): self.bids, self.asks, self.bb, self.ba = {}, {}, None, None

    def update(self, side, px, sz):
        if side > 0:
            if sz:
                self.bids[px] = sz
                if self.bb is None or px > self.bb: self.bb = px
                while self.ba is not None and self.ba <= px:  # the crossing rule: drop asks at or below a new bid
                    del self.asks[self.ba]
                    self.ba = min(self.asks) if self.asks else None
            elif self.bids.pop(px, None) is not None and px == self.bb: self.bb = max(self.bids) if self.bids else None
        else:
            if sz:
                self.asks[px] = sz
                if self.ba is None or px < self.ba: self.ba = px
                while self.bb is not None and self.bb >= px:
                    del self.bids[self.bb]
                    self.bb = max(self.bids) if self.bids else None
            elif self.asks.pop(px, None) is not None and px == self.ba: self.ba = min(self.asks) if self.asks else None

    def top(self):
        return (self.bb or 0, self.bids.get(self.bb, 0.0), self.ba or 0, self.asks.get(self.ba, 0.0))


class BruteDictBook(DictBook):
    "The brute-force reference of tests/test_book.py: best = max/min of the keys after every update."
    def update(self, side, px, sz):
        mine, other = (self.bids, self.asks) if side > 0 else (self.asks, self.bids)
        if sz:
            mine[px] = sz
            for p in [p for p in other if (p <= px if side > 0 else p >= px)]: del other[p]
        else: mine.pop(px, None)
        self.bb, self.ba = max(self.bids, default=None), min(self.asks, default=None)


def synthetic(n:int, tick:int=1_000_000, seed:int=0) -> np.ndarray:
    "n level updates around a random-walk mid (ticks near the touch, 35% removals)."
    rng = np.random.default_rng(seed)
    mid = 6_000_000 + np.cumsum(rng.choice([-1, 0, 1], n, p=[0.05, 0.9, 0.05]))
    side = rng.choice(np.array([1, -1], np.int8), n)
    dist = np.minimum(rng.geometric(0.05, n), 5000)
    size = np.where(rng.random(n) < 0.35, 0.0, np.round(rng.lognormal(0, 1, n), 5))
    return batch('book', side=side, price=(mid - side * dist) * tick, size=size, update_id=np.arange(n), seq=np.arange(n))


def chunk_times(update_chunk, b:np.ndarray, rows:int) -> np.ndarray:
    "ns/update of each `rows`-row chunk, fed in order to `update_chunk(chunk)`."
    out = []
    gc.collect(); gc.disable()
    try:
        for s in range(0, len(b), rows):
            part = b[s:s + rows]
            t0 = time.perf_counter_ns(); update_chunk(part); out.append((time.perf_counter_ns() - t0) / len(part))
    finally: gc.enable()
    return np.array(out)


def python_chunk(book):
    "Feed a chunk through `book.update` one row at a time (rows as Python scalars, converted outside the timer)."
    def run(part):
        for side, px, sz in part: book.update(side, px, sz)
    return run


def as_rows(b:np.ndarray, rows:int) -> list:
    return [b[s:s + rows][['side', 'price', 'size']].tolist() for s in range(0, len(b), rows)]


def timed_rows(update_chunk, chunks:list) -> np.ndarray:
    out = []
    gc.collect(); gc.disable()
    try:
        for part in chunks:
            t0 = time.perf_counter_ns(); update_chunk(part); out.append((time.perf_counter_ns() - t0) / len(part))
    finally: gc.enable()
    return np.array(out)


def check_same_top(b:np.ndarray, tick:int, brute_rows:int):
    """Every path reaches the same top of book: the batch path equals the dict book after every update, and the
    brute-force dict book over the first `brute_rows`; the per-update path ends where the batch path does."""
    top = L2Book(tick).apply(b)
    per = L2Book(tick)
    ref, brute = DictBook(), BruteDictBook()
    for i, (side, px, sz) in enumerate(b[['side', 'price', 'size']].tolist()):
        per.update(side, px, sz); ref.update(side, px, sz)
        if tuple(top[i].tolist()) != ref.top(): raise AssertionError(f"batch path and dict book differ at row {i}")
        if i < brute_rows:
            brute.update(side, px, sz)
            if brute.top() != ref.top(): raise AssertionError(f"brute-force and tracked dict books differ at row {i}")
    if per.top().tolist() != top[-1:].tolist(): raise AssertionError("per-update path and batch path differ")


def machine() -> str:
    import numba
    return (f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()} · "
            f"numpy {np.__version__} · numba {numba.__version__}")


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_book', description=__doc__.split('\n')[0])
    p.add_argument('--synthetic', type=int, default=1_000_000, help='updates in the synthetic stream (default 1M)')
    p.add_argument('--chunk', type=int, default=1024, help='rows per timed chunk (default 1024)')
    p.add_argument('--repeat', type=int, default=3, help='best of R for the one-call rows (default 3)')
    p.add_argument('--brute-rows', type=int, default=20_000, help='rows of each stream for the brute-force dict book')
    here = Path(__file__).resolve().parent.parent/'replay/data/binance/btcusdt_20240808_spot.gz'
    p.add_argument('--capture', default=str(here), help='Binance capture (default: the BTCUSDT one)')
    p.add_argument('--capture-rows', type=int, default=0, help='only the first N updates of the capture (default: all)')
    p.add_argument('--smoke', action='store_true', help='20,000 updates per stream, one run per row: every check and the '
                   'table (the test command runs this)')
    a, _ = p.parse_known_args(argv)
    if a.smoke: vars(a).update(SMOKE)

    depth = binance_depth(a.capture)
    if a.capture_rows: depth = depth[:a.capture_rows]
    streams = {'BTCUSDT depth': depth, f'synthetic {a.synthetic / 1e6:g}M': synthetic(a.synthetic)}
    print(f"velox bench book{' · smoke' if a.smoke else ''} · chunks of {a.chunk} updates · machine: {machine()}\n")
    rows = []
    for name, b in streams.items():
        tick = infer_tick(b['price'])
        L2Book(tick).apply(b[:100])  # compile (or load the numba cache) outside the timers
        checked = b if len(b) <= 200_000 else b[:200_000]
        check_same_top(checked, tick, a.brute_rows)
        print(f"{name}: {len(b):,} updates; every path has the same top of book over the first {len(checked):,} "
              f"(the brute-force book over {min(a.brute_rows, len(b)):,})")
        one = min(_one_call(b, tick) for _ in range(a.repeat))
        bk = L2Book(tick)
        batch_ns = chunk_times(bk.apply, b, a.chunk)
        chunks = as_rows(b, a.chunk)
        per_ns = timed_rows(python_chunk(L2Book(tick)), chunks)
        dict_ns = timed_rows(python_chunk(DictBook()), chunks)
        brute = as_rows(b[:a.brute_rows], a.chunk)
        brute_ns = timed_rows(python_chunk(BruteDictBook()), brute)
        ref = dict_ns.mean()
        rows += [(name, 'njit batch: L2Book.apply, one call', len(b), one, one, ref),
                 (name, 'njit batch: L2Book.apply per chunk', len(b), np.median(batch_ns), batch_ns.mean(), ref),
                 (name, 'per-update Python: L2Book.update', len(b), np.median(per_ns), per_ns.mean(), ref),
                 (name, 'pure-Python dict book (tracked best)', len(b), np.median(dict_ns), ref, ref),
                 (name, f'brute-force dict book (first {min(a.brute_rows, len(b)):,})', min(a.brute_rows, len(b)),
                  np.median(brute_ns), brute_ns.mean(), ref)]
    print()
    head = f"{'stream':<16} {'path':<42} {'updates':>10} {'median ns':>10} {'mean ns':>10} {'vs dict':>8}"
    print(head); print('-' * len(head))
    for stream, path, n, med, mean, ref in rows:
        print(f"{stream:<16} {path:<42} {n:>10,} {med:>10.0f} {mean:>10.0f} {ref / mean:>7.2f}x")
    print(f"\nns = ns/update; median/mean over {a.chunk}-update chunks (one-call rows: best of {a.repeat} whole-stream "
          f"calls, median = mean). vs dict = the dict book's mean over this path's mean. Target: batch path <= "
          f"{TARGET_NS} ns/update median. Measured, not asserted.")


def _one_call(b, tick) -> float:
    bk = L2Book(tick)
    gc.collect()
    t0 = time.perf_counter_ns(); bk.apply(b); return (time.perf_counter_ns() - t0) / len(b)


if __name__ == '__main__':
    main()
