"""Nanoseconds per L3 (market-by-order) update, and rows decoded per second from vendor files.

    python bench/bench_l3.py [--synthetic N] [--repeat R]
    python bench/bench_l3.py --smoke     (20,000 synthetic records, one repeat, the real MBO samples)

Books: velox's `L3Book` (numba order and level tables, level rows at event ends, the derived L2 book and its top)
against a pure-Python reference of the same rules (a dict of orders, a dict of level sizes, the best found with max/min
at each event end). Streams: the two real Databento MBO samples (CME ESH4 snapshot, ESM4 two seconds) and a synthetic
stream of N records (default 1M: adds, cancels, modifies, trades and fills around a fixed mid, events of 1-4
records). Before timing, both books must give the same top of book at every event end. Decoding: `load_dbn` (numpy
layouts) against the databento-dbn package's own decoder reading every field of every record into Python lists, and
`load_tardis`. Nothing is asserted about speed.
"""
from __future__ import annotations
import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from velox.events import batch
from velox.feeds.databento import dbn_bytes, load_dbn
from velox.feeds.tardis import load_tardis
from velox.market.l3 import F_LAST, L3Book

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / 'tests' / 'fixtures' / 'vendor'
MBO = [VENDOR / 'databento' / 'esh4-glbx-mdp3-20231224.mbo.dbn.zst',
       VENDOR / 'databento' / 'orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst']
SMOKE = dict(synthetic=20_000, repeat=1)


class DictL3:
    "Pure-Python reference: orders by id, level sizes by (side, price); the top by max/min at each event end."
    def __init__(self): self.orders, self.levels = {}, {1: {}, -1: {}}

    def _level(self, side, price, dq):
        lv = self.levels[side]; q = lv.get(price, 0.0) + dq
        if q > 0: lv[price] = q
        else: lv.pop(price, None)

    def apply(self, action, side, price, size, oid, flags):
        tops = []
        for a, s, p, q, k, f in zip(action, side, price, size, oid, flags):
            if a == 'A' or a == 'M':
                o = self.orders.get(k)
                if o is not None: self._level(o[0], o[1], -o[2])
                if s != 0 and q > 0: self.orders[k] = (s, p, q); self._level(s, p, q)
                else: self.orders.pop(k, None)
            elif a == 'C':
                o = self.orders.get(k)
                if o is not None:
                    d = min(q, o[2]); self._level(o[0], o[1], -d)
                    if o[2] - d > 0: self.orders[k] = (o[0], o[1], o[2] - d)
                    else: del self.orders[k]
            elif a == 'R': self.orders.clear(); self.levels = {1: {}, -1: {}}
            if f & F_LAST:
                b, x = self.levels[1], self.levels[-1]
                bb = max(b) if b else 0; ba = min(x) if x else 0
                tops.append((bb, b.get(bb, 0.0), ba, x.get(ba, 0.0)))
        return tops


def synthetic(n: int, seed: int = 7) -> np.ndarray:
    "N MBO records around a fixed mid (so the book never crosses; 1e-8 units, tick 0.25): adds, cancels, modifies, trades/fills."
    rng = np.random.default_rng(seed)
    tick, mid, live, rows, oid = 25_000_000, 5_000 * 10**8, [], [], 1
    while len(rows) < n:
        for _ in range(int(rng.integers(1, 5))):
            u = rng.random()
            if u < 0.45 or len(live) < 50:
                s = 1 if rng.random() < 0.5 else -1
                p = mid - s * tick * int(rng.integers(1, 20))
                rows.append(('A', s, p, float(rng.integers(1, 30)), oid)); live.append((oid, s, p)); oid += 1
            elif u < 0.8:
                k, s, p = live.pop(int(rng.integers(len(live))))
                rows.append(('C', s, p, 1000.0, k))
            elif u < 0.92:
                j = int(rng.integers(len(live))); k, s, p = live[j]
                p2 = p if rng.random() < 0.5 else p - s * tick
                live[j] = (k, s, p2); rows.append(('M', s, p2, float(rng.integers(1, 30)), k))
            else:
                k, s, p = live[int(rng.integers(len(live)))]
                rows.append(('T', -s, p, 1.0, 0)); rows.append(('F', s, p, 1.0, k))
        rows[-1] = rows[-1] + (True,)
    rows = rows[:n]
    last = np.array([len(r) == 6 for r in rows]); last[-1] = True
    a = np.array([r[:5] for r in rows], dtype=[('action', 'U1'), ('side', 'i1'), ('price', 'i8'), ('size', 'f8'), ('order_id', 'u8')])
    return batch('mbo', ts=np.arange(n) + 1, symbol=['SYN'] * n, action=a['action'], side=a['side'], price=a['price'],
                 size=a['size'], order_id=a['order_id'], flags=np.where(last, F_LAST, 0).astype('u1'), seq=np.arange(n))


def best(f, repeat: int) -> float:
    "Best of `repeat` runs of f(), seconds."
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return min(t)


def machine() -> str:
    return f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}"


def main(argv=None):
    p = argparse.ArgumentParser(prog='bench_l3', description=__doc__.split('\n')[0])
    p.add_argument('--synthetic', type=int, default=1_000_000, help='records in the synthetic MBO stream (default 1,000,000)')
    p.add_argument('--repeat', type=int, default=3, help='timed runs per row; the best is shown (default 3)')
    p.add_argument('--smoke', action='store_true', help='small inputs, every check, the table (what the test suite runs)')
    a = p.parse_args(argv)
    if a.smoke: a.synthetic, a.repeat = SMOKE['synthetic'], SMOKE['repeat']
    print(f"velox bench l3{' · smoke' if a.smoke else ''} · best of {a.repeat} · machine: {machine()}\n")
    streams = [(f.name.split('.')[0][:24], load_dbn(f)['mbo']) for f in MBO] + [('synthetic', synthetic(a.synthetic))]
    L3Book().apply(streams[1][1][:100])  # compile outside the timings
    rows = []
    for name, m in streams:
        cols = (m['action'].tolist(), m['side'].tolist(), m['price'].tolist(), m['size'].tolist(), m['order_id'].tolist(), m['flags'].tolist())
        ref = DictL3().apply(*cols)
        got = L3Book().apply_tops(m)[1].tolist()
        if got != ref:
            bad = next(i for i, (x, y) in enumerate(zip(got, ref)) if x != y)
            raise SystemExit(f"{name}: L3Book and the dict reference differ at event end {bad}: {got[bad]} vs {ref[bad]}")
        t_dict = best(lambda c=cols: DictL3().apply(*c), a.repeat)
        t_l3 = best(lambda m=m: L3Book().apply(m), a.repeat)
        rows.append((name, 'L3Book.apply (numba, + derived L2 book)', len(m), t_l3, t_dict))
        rows.append((name, 'dict reference (pure Python)', len(m), t_dict, t_dict))
        print(f"{name}: {len(m):,} records, {len(ref):,} event ends: same top of book at every one")

    print()
    head = f"{'stream':<26} {'path':<42} {'records':>10} {'ns/update':>10} {'vs dict':>8}"
    print(head); print('-' * len(head))
    for name, path, n, t, ref in rows: print(f"{name:<26} {path:<42} {n:>10,} {t / n * 1e9:>10.0f} {ref / t:>7.2f}x")
    print()
    import databento_dbn as dbn

    def vendor_decode(raw):
        d = dbn.DBNDecoder(); d.write(raw); recs = d.decode()[1:]
        return [[r.ts_recv, r.order_id, r.price, r.size, r.flags, r.action, r.side, r.sequence] for r in recs]
    head = f"{'file':<44} {'reader':<40} {'rows':>8} {'rows/s':>12} {'vs ref':>7}"
    print(head); print('-' * len(head))
    for f in MBO:
        raw = dbn_bytes(f); n = len(load_dbn(f)['mbo'])
        t_ref = best(lambda raw=raw: vendor_decode(raw), a.repeat)
        t_ours = best(lambda f=f: load_dbn(f), a.repeat)
        t_zst = best(lambda f=f: dbn_bytes(f), a.repeat)
        print(f"{f.name[:44]:<44} {'load_dbn (zstd + numpy + checks)':<40} {n:>8,} {n / t_ours:>12,.0f} {t_ref / t_ours:>6.2f}x")
        print(f"{'':<44} {'  of which zstd decompression':<40} {n:>8,} {n / t_zst:>12,.0f}")
        print(f"{'':<44} {'databento-dbn objects -> lists (ref)':<40} {n:>8,} {n / t_ref:>12,.0f} {1:>6.2f}x")
    for f in sorted((VENDOR / 'tardis').glob('*.csv')):
        ev = load_tardis(f); n = sum(len(v) for v in ev.values())
        t = best(lambda f=f: load_tardis(f), a.repeat)
        print(f"{f.name[:44]:<44} {'load_tardis (csv + checks)':<40} {n:>8,} {n / t:>12,.0f}")
    print("\nrows/s of load_dbn: velox rows out per second, decompression and every check included; the Tardis samples are a few "
          "lines each (their rate is mostly per-file overhead).")


if __name__ == '__main__':
    main()
