"""Fills benchmark (issue 20): the exact fill tier against the fast one, and the exact FIFO queue against a brute-force
order map. Measured, never asserted.

    python bench/bench_fills.py [--day 2013-10-08] [--start 10:00 --end 12:00] [--orders 60] [--repeat 3]
    python bench/bench_fills.py --smoke     (10:00-10:10 New York, 8 queue orders, one run per row)
    velox bench fills

1. Execution: IBM and BAC's NBBO (Lean, the day's consolidated quotes) with signals every 10 s (market orders, and
   DAY limits one tick behind the touch), through ExecutionStage with the fast tier (`PaperBroker`) and the exact tier
   (`ExactBroker`, risk-averse and probabilistic queues, recorded-style latencies). Checked untimed first: both tiers
   place the same signals, the exact tier never takes more than a quote displayed at one price (each fill placed on the
   NBBO row it executed against, the one in force at its event time), and a snapshot/restore halfway gives the same
   orders and fills.
2. Queue: FIFO positions and fill times of resting sells/buys on the Databento ESM4 MBO sample (NautilusTrader test
   data, LGPL-3.0; see tests/fixtures/vendor/README.md) with `velox.trade.queue.fifo_fills` (the L3 book) against a
   plain dict order map; checked equal first.
"""
import argparse, os, platform, time
from pathlib import Path
import numpy as np
from velox.core import NS, day_start_ns
from velox.events import PRICE_SCALE, batch
from velox.feeds.databento import read_dbn
from velox.feeds.recorded import Catalog
from velox.feeds.replay import ArraySource
from velox.market.nbbo import consolidated_nbbo
from velox.runtime.runners import run_frame
from velox.trade.broker import PaperBroker
from velox.trade.execution import ExecutionStage
from velox.trade.fill_tiers import ExactBroker, FillSettings
from velox.trade.latency import Latency
from velox.trade.queue import Resting, fifo_fills
from velox.trade.risk import Account, Strategy

ROOT = Path(__file__).resolve().parent.parent
MBO = ROOT / 'tests/fixtures/vendor/databento/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst'
SMOKE = dict(start='10:00', end='10:10', orders=8, repeat=1)
KEEP = ('order', 'fill', 'position')
LAT = Latency(samples=np.array([[1_000_000, 200_000], [3_000_000, 500_000], [7_000_000, 900_000]]))


def market(day, start, end):
    t0 = day_start_ns(day)
    hm = lambda s: t0 + (int(s[:2]) * 3600 + int(s[3:]) * 60) * NS
    lo, hi, nb = hm(start), hm(end), {}
    for sym in ('IBM', 'BAC'):
        q = Catalog(ROOT / 'replay/data').find(sym, day, kinds=('quote',))[0].load()
        nb[sym], _ = consolidated_nbbo(q[(q['ts'] >= lo) & (q['ts'] < hi)])
    sigs = []
    for k, (sym, b) in enumerate(nb.items()):
        ts = np.arange(lo + (3 + k) * NS, hi, 10 * NS)
        n, q = len(ts), b[np.searchsorted(b['ts'], ts, 'right') - 1]
        d = np.where(np.arange(n) % 4 < 2, 1, -1)
        entry = np.where(np.arange(n) % 3 == 0, np.where(d > 0, q['bid'] - PRICE_SCALE // 100, q['ask'] + PRICE_SCALE // 100), 0)
        sigs.append(batch('signal', ts=ts, symbol=[sym] * n, strategy=['momo'] * n, stage=['final'] * n, direction=d,
                          size=[300.0] * n, entry=entry, id=[f'{sym}{i}' for i in range(n)]))
    srcs = [ArraySource('nbbo', s, b) for s, b in nb.items()] + [ArraySource('signal', str(b['symbol'][0]), b) for b in sigs]
    return nb, srcs


class Rows(dict):
    "The dealer's last quotes (`Marks.quotes`), counting each symbol's: the NBBO row in force is `n[symbol] - 1`."
    def __init__(self): super().__init__(); self.n = {}
    def __setitem__(self, sym, q): self.n[sym] = self.n.get(sym, 0) + 1; super().__setitem__(sym, q)


class Probe(ExactBroker):
    "The exact tier, noting each fill with the NBBO row it took: (order id, symbol, side, limit, row, touch, price, qty, ack)."
    def execute(self, order, quote):
        fills = super().execute(order, quote)
        row, touch = self.rows.n[order.symbol] - 1, quote[2] if order.side > 0 else quote[0]
        self.took += [(order.id, order.symbol, order.side, order.limit, row, touch, p, q, self.ack_latency(order)) for p, q, _ in fills]
        return fills


def stage(tier, probe=False):
    broker = (PaperBroker(fee_per_share=0.005) if tier == 'fast' else
              (Probe if probe else ExactBroker)(FillSettings({'': LAT}, queue=tier)))
    s = ExecutionStage([Account('a', (Strategy('momo'),)), Account('b', (Strategy('momo'),))], broker, latency_ms=3, tif='DAY')
    if probe: broker.took = []; s.state.marks.quotes = broker.rows = Rows()
    return s


def overtaken(nb, res, took) -> str:
    """Where the exact tier took more than a quote displayed at one price, '' if nowhere. Each fill is placed on the
    NBBO row it executed against (several rows can share a timestamp, and a price can leave and come back within one);
    that row must be the quote in force at the fill's event time less its ack latency, a taker fill is at its touch, and
    over a run of rows at one touch price what our fills took so far never exceeds the size the row displays."""
    f, want = res['fill'], {}
    for r in took: want.setdefault(r[0], []).append(r)
    for i, r in enumerate(f.tolist()):
        oid, ts, qty = r[4], r[0], r[6]
        if not want.get(oid) or want[oid][0][7] != qty: return f"fill {i} of order {oid} is not one the broker made"
        _, sym, side, limit, row, touch, price, _, ack = want[oid].pop(0)
        q, px, t = nb[sym], 'ask' if side > 0 else 'bid', ts - ack
        if touch != q[px][row] or not (q['ts'][row] <= t and (row + 1 == len(q) or q['ts'][row + 1] >= t)):
            return f"order {oid} filled at {t} against {sym}'s quote of {int(q['ts'][row])}, not the one in force then"
        if not limit and price != touch: return f"order {oid} took {price} when {sym}'s {px} was {touch}"
    if any(want.values()): return "the broker made fills that were never reported"
    for sym, q in nb.items():
        for side, px, sz in ((1, 'ask', 'ask_size'), (-1, 'bid', 'bid_size')):
            run = np.r_[0, np.cumsum(q[px][1:] != q[px][:-1])]  # rows in a row at one price
            so_far = {}
            for _oid, s, d, _, row, _, _, qty, _ in took:
                if (s, d) != (sym, side): continue
                k = int(run[row]); so_far[k] = so_far.get(k, 0.0) + qty
                if so_far[k] > q[sz][row] + 1e-9:
                    return f"our fills took {so_far[k]:g} of {sym}'s {px} at {int(q[px][row])}, which displayed {q[sz][row]:g}"
    return ''


def check_tiers(nb, srcs):
    out, took = {'fast': run_frame(stage('fast'), srcs, collect=KEEP).outputs}, {}
    for t in ('risk_averse', 'prob'):
        s = stage(t, probe=True)
        out[t], took[t] = run_frame(s, srcs, collect=KEEP).outputs, s.settings.broker.took
        if s.settings.broker.rows.n != {k: len(b) for k, b in nb.items()}: raise SystemExit(f"the {t} tier saw other quotes than the NBBO")
    placed = lambda r: sorted(r['order']['signal_id'][r['order']['status'] == 'PLACED'].tolist())
    for t in ('risk_averse', 'prob'):
        if placed(out[t]) != placed(out['fast']): raise SystemExit(f"the {t} tier placed other signals than the fast tier")
        why = overtaken(nb, out[t], took[t])
        if why: raise SystemExit(f"{t} tier: {why}")
    s = stage('risk_averse'); half = len(srcs[0].data) // 2
    cut = int(srcs[0].data['ts'][half])
    a = [ArraySource(x.kind, x.symbol, x.data[x.data['ts'] < cut]) for x in srcs]
    b = [ArraySource(x.kind, x.symbol, x.data[x.data['ts'] >= cut]) for x in srcs]
    items = lambda ss: [(x.kind, x.data) for x in ss if len(x.data)]
    first = s.process_window(items(a)); saved = s.snapshot()
    s2 = stage('risk_averse'); s2.restore(saved)
    rest = s2.process_window(items(b)) + s2.flush()
    for k in ('order', 'fill'):
        got = np.concatenate([x for kk, x in first + rest if kk == k])
        if got.tobytes() != out['risk_averse'][k].tobytes(): raise SystemExit(f"snapshot/restore halfway changed the {k}s")
    return out


def brute(mbo, o):
    book, prio, mine = {}, 0, None
    fills, rem = [], o.qty
    for n, r in enumerate(mbo.tolist()):
        ts, _, k, a, s, p, q = r[:7]
        if n == o.row: prio += 1; mine = prio
        if n >= o.row and a == 'F' and s == o.side and rem > 0:
            x = book.get(k)
            if (p < o.price if o.side > 0 else p > o.price) or (p == o.price and x is not None and x[3] > mine):
                fills.append((ts, min(rem, q))); rem -= min(rem, q)
        if a == 'R': book.clear()
        elif a == 'A' or (a == 'M' and k not in book):
            book.pop(k, None)
            if s != 0 and q > 0: prio += 1; book[k] = [s, p, q, prio]
        elif a == 'M':
            x = book[k]
            if (x[0], x[1]) != (s, p): prio += 1; book[k] = [s, p, q, prio]
            else:
                if q > x[2]: prio += 1; x[3] = prio
                x[2] = q
                if q <= 0: del book[k]
        elif a == 'C' and k in book:
            book[k][2] -= min(q, book[k][2])
            if book[k][2] <= 0: del book[k]
    return fills


def queue_orders(mbo, n):
    ask = 521_425_000_000
    q = np.flatnonzero((mbo['price'] == ask) & (mbo['side'] == -1))
    return [Resting(int(mbo['ts'][q[i % 12]]), -1, ask, float(1 + i % 4), row=int(q[i % 12])) for i in range(n)]


def best(f, repeat):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter(); r = f(); t.append(time.perf_counter() - t0)
    return min(t), r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--day', default='2013-10-08', help='the Lean day of IBM and BAC quotes (default 2013-10-08)')
    ap.add_argument('--start', default='10:00', help='New York time the window starts (default 10:00)')
    ap.add_argument('--end', default='12:00', help='New York time the window ends (default 12:00)')
    ap.add_argument('--orders', type=int, default=60, help='resting orders simulated in the queue benchmark (default 60)')
    ap.add_argument('--repeat', type=int, default=3, help='timed runs per row; the best is shown (default 3)')
    ap.add_argument('--smoke', action='store_true', help=f'a small run: {SMOKE}')
    a = ap.parse_args(argv)
    if a.smoke: vars(a).update(SMOKE)
    nb, srcs = market(a.day, a.start, a.end)
    n_nb = sum(len(b) for b in nb.values())
    print(f"velox bench fills{' · smoke' if a.smoke else ''} · IBM,BAC {a.day} {a.start}-{a.end} · {n_nb:,} NBBO updates · "
          f"{a.orders} queue orders on ESM4 MBO")
    print(f"machine: {platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")
    out = check_tiers(nb, srcs)
    mbo = read_dbn(MBO).events['mbo']
    orders = queue_orders(mbo, a.orders)
    for o in orders[:min(len(orders), 12)]:
        if fifo_fills(mbo, o).fills != brute(mbo, o): raise SystemExit(f"FIFO fills differ from the brute-force order map for {o}")
    print("checked untimed: the same signals in every tier; exact tiers never take more than displayed; snapshot/restore "
          "halfway gives the same orders and fills; FIFO fills equal the brute-force order map\n")
    print(f"{'run':>28} {'orders':>8} {'fills':>7} {'s':>8} {'events/s':>11} {'vs fast':>8}")
    base = None
    for t in ('fast', 'risk_averse', 'prob'):
        s, _ = best(lambda t=t: run_frame(stage(t), srcs, collect=KEEP), a.repeat)
        base = base or s
        r = out[t]
        print(f"{'execution ' + t:>28} {int((r['order']['status'] == 'PLACED').sum()):>8,} {len(r['fill']):>7,} {s:>8.3f} "
              f"{n_nb / s:>11,.0f} {base / s:>7.2f}x")
    sb, _ = best(lambda: [brute(mbo, o) for o in orders], 1)
    sf, _ = best(lambda: [fifo_fills(mbo, o) for o in orders], a.repeat)
    print(f"{'queue brute-force dict map':>28} {len(orders):>8,} {'':>7} {sb:>8.3f} {len(mbo) * len(orders) / sb:>11,.0f} {'':>8}")
    print(f"{'queue fifo_fills (L3 book)':>28} {len(orders):>8,} {'':>7} {sf:>8.3f} {len(mbo) * len(orders) / sf:>11,.0f} {sb / sf:>7.2f}x")
    print("\ns = best wall time; events/s = NBBO updates (execution) or MBO rows x orders (queue) per second; "
          "'vs fast' = the fast tier's time / this row's (queue: the brute-force map's).")


if __name__ == '__main__':
    main()
