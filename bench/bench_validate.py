"""What validation costs: recorded days loaded with every rule applied, the rules alone, and bus frames decoded with
and without the rules.

    python bench/bench_validate.py [--repeat R] [--frame-rows N]
    python bench/bench_validate.py --smoke     (IBM trades only, one run per row)

Rows: each Lean tick file of IBM and BAC on 2013-10-08 (861,099 rows in all) and the BTCUSDT capture: the loader
(parse + validate), best of R CPU seconds, and the validator's share: the same checks the loader makes, run alone on
its parsed columns and batch. Then a frame of N real trades: `decode_frame` (bytes to rows) against `decode_message`
(the same plus `check_batch`). Before timing, every file is checked to give one row per recorded line and the two
decoders the same rows. Nothing is asserted about speed.
"""
from __future__ import annotations
import argparse
import time
import zipfile
from pathlib import Path

import numpy as np

from velox.core import day_start_ns
from velox.feeds.recorded import LEAN_COLUMNS, LEAN_MULT, load_binance, load_lean_ticks, parse_lean_csv, read_bytes
from velox.feeds.validate import (Rows, check_batch, check_encoding, check_not_empty, check_order, day_window,
                                  plausible_window, prices_from, times_from)
from velox.infra.codecs import decode_frame, decode_message, encode_frame

DATA = Path(__file__).resolve().parent.parent / 'replay/data'
TICK = DATA / 'lean/equity/usa/tick'


def cpu(fn, repeat: int) -> float:
    "Best of `repeat` CPU seconds (the container's two cores are shared: wall time says more about the neighbours)."
    best = float('inf')
    for _ in range(repeat):
        t = time.process_time(); fn(); best = min(best, time.process_time() - t)
    return best


def lean_checks(path: Path):
    "The checks `load_lean_ticks` makes on `path`, as a function of nothing (parsing done beforehand)."
    kind, day = path.stem.split('_')[1], path.stem.split('_')[0]
    data = read_bytes(path)
    c = parse_lean_csv(data, LEAN_COLUMNS['tick', kind], path)
    b = load_lean_ticks(path)
    rows, w = Rows(str(path), names={'ts': 'time_ms'}), day_window(day)
    prices = ('price',) if kind == 'trade' else ('bid_price', 'ask_price')
    def run():
        check_not_empty(data, path); check_encoding(data, path)
        check_order(times_from(c['time_ms'], 10**6, day_start_ns(day), w, rows), rows)
        for p in prices: prices_from(c[p], LEAN_MULT, rows, p)
        check_batch(kind, b, rows)
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeat', type=int, default=5)
    ap.add_argument('--frame-rows', type=int, default=65_536)
    ap.add_argument('--smoke', action='store_true')
    a = ap.parse_args(argv)
    files = [TICK / 'ibm/20131008_trade.zip'] if a.smoke else [TICK / s / f'20131008_{k}.zip' for s in ('ibm', 'bac') for k in ('quote', 'trade')]
    repeat = 1 if a.smoke else a.repeat
    print(f"velox bench validate{' · smoke' if a.smoke else ''} · {len(files)} Lean files, best of {repeat} CPU seconds")
    for p in files:  # check: one row per recorded line, nothing refused or dropped
        with zipfile.ZipFile(p) as z: lines = z.read(z.namelist()[0]).count(b'\n') + 1
        assert len(load_lean_ticks(p)) == lines, p
    print(f"{'source':<32} {'rows':>9} {'load ms':>9} {'checks ms':>10} {'share':>6} {'ns/row':>7}")
    total = [0, 0.0, 0.0]
    for p in files:
        n = len(load_lean_ticks(p))
        load, checks = cpu(lambda p=p: load_lean_ticks(p), repeat), cpu(lean_checks(p), repeat)
        total = [total[0] + n, total[1] + load, total[2] + checks]
        print(f"{p.parent.name + '/' + p.name:<32} {n:>9,} {load * 1e3:>9.1f} {checks * 1e3:>10.1f} {checks / load:>6.0%} {checks / n * 1e9:>7.0f}")
    print(f"{'all':<32} {total[0]:>9,} {total[1] * 1e3:>9.1f} {total[2] * 1e3:>10.1f} {total[2] / total[1]:>6.0%} {total[2] / total[0] * 1e9:>7.0f}")
    if not a.smoke:
        bn = DATA / 'binance/btcusdt_20240808_spot.gz'
        n = sum(map(len, load_binance(bn).values()))
        print(f"{bn.name:<32} {n:>9,} {cpu(lambda: load_binance(bn), repeat) * 1e3:>9.1f}   (one pass: parse, types and rules together)")
    tr = load_lean_ticks(files[-1])
    tr = tr[np.arange(min(a.frame_rows, len(tr) * 8)) % len(tr)]
    frame = encode_frame('trade', tr)
    np.testing.assert_array_equal(decode_message(frame)[1], decode_frame(frame)[1])
    plain, checked = cpu(lambda: decode_frame(frame), repeat * 4), cpu(lambda: decode_message(frame), repeat * 4)
    only = cpu(lambda: check_batch('trade', tr, Rows('trade frame', unit='row'), plausible_window()), repeat * 4)
    print(f"trade frame of {len(tr):,} rows: decode_frame {plain * 1e3:.2f} ms, decode_message {checked * 1e3:.2f} ms "
          f"(check_batch alone {only * 1e3:.2f} ms, {only / len(tr) * 1e9:.0f} ns/row)")


if __name__ == '__main__':
    main()
