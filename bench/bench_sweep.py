"""A parameter sweep (`velox.runtime.sweep`) on a local Dask cluster against the same sweep run serially in this process,
and once more with a Dask worker killed mid-sweep.

    python bench/bench_sweep.py [--workers 2] [--start HH:MM --end HH:MM]   (24 sets x every bundled IBM/BAC tick day)
    python bench/bench_sweep.py --smoke     (24 sets x IBM 2013-10-08/09, 10:00-10:15 New York)

Checks first: the Dask table equals the serial one, and so does the table of the run that lost a worker (the
scheduler re-runs its cells elsewhere; --smoke runs only this one on Dask). Then one row per run: cells, seconds, cells/s and the ratio to the serial run.
"""
from __future__ import annotations
import argparse, os, platform, signal, tempfile, threading, time
from pathlib import Path
import pandas as pd
from velox.feeds.recorded import Catalog
from velox.runtime.sweep import SweepSettings, param_grid, sweep

ROOT = Path(__file__).resolve().parent.parent
GRID = {'tolerance_bps': [0.5, 1.0, 2.0, 5.0], 'min_size': [0, 100, 500], 'block_size': [10_000, 50_000]}  # 24 sets
SMOKE = dict(symbols='IBM', days='2013-10-08,2013-10-09', start='10:00', end='10:15')


def killed_run(sets, symbols, days, settings, out, client):
    "The sweep on the cluster of `client`, one of whose worker processes is SIGKILLed once a few cells are done."
    total, state = len(sets) * len(symbols) * len(days), {}
    def killer():
        while len(list((out / 'cells').glob('*.json'))) < max(2, total // 6): time.sleep(0.02)
        pid = next(iter(client.run(os.getpid).values()))
        state['done_at_kill'] = len(list((out / 'cells').glob('*.json')))
        os.kill(pid, signal.SIGKILL)
    threading.Thread(target=killer, daemon=True).start()
    r = sweep(sets, symbols, days, settings, out, scheduler=client.scheduler.address, progress=False)
    assert 'done_at_kill' in state and state['done_at_kill'] < total, f"the worker was not killed mid-sweep: {state}"
    return r, state['done_at_kill']


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--symbols', default='IBM,BAC'); p.add_argument('--days', default=None)
    p.add_argument('--start', default='09:30'); p.add_argument('--end', default='16:00')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--smoke', action='store_true', help='24 sets over IBM 2013-10-08/09, 10:00-10:15: every check and the table')
    a = p.parse_args()
    if a.smoke: vars(a).update(SMOKE)
    cat = Catalog(ROOT / 'replay' / 'data')
    symbols = a.symbols.split(',')
    days = a.days.split(',') if a.days else sorted({s.day for s in cat.sources() if s.fmt == 'lean_tick' and s.symbol in symbols})
    st = SweepSettings(data=str(cat.root), window=(a.start, a.end))
    sets = param_grid(GRID)
    print(f"velox bench sweep{' · smoke' if a.smoke else ''} · {len(sets)} sets × {','.join(symbols)} × {len(days)} days · "
          f"{a.start}-{a.end} New York · {a.workers} Dask workers")
    print(f"machine: {platform.processor() or platform.machine()} · {os.cpu_count()} cores · python {platform.python_version()}\n")
    from dask.distributed import Client, LocalCluster
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    started = time.perf_counter() - t0
    tmp, rows, tables = Path(tempfile.mkdtemp(prefix='velox-bench-sweep-')), [], {}
    try:
        for name, run in (('serial (this process)', lambda o: (sweep(sets, symbols, days, st, o, scheduler='serial', progress=False), None)),
                          *([] if a.smoke else [(f'Dask LocalCluster ({a.workers} processes)', lambda o: (sweep(sets, symbols, days, st, o, scheduler=cluster.scheduler_address, progress=False), None))]),
                          (f'Dask ({a.workers} processes), one killed mid-sweep', lambda o: killed_run(sets, symbols, days, st, o, client))):
            t0 = time.perf_counter()
            r, at = run(tmp / str(len(rows)))
            dt = time.perf_counter() - t0
            tables[name] = r.table.drop(columns='manifest')
            rows.append({'run': name, 'cells': r.computed, 'seconds': dt, 'cells/s': r.computed / dt,
                         'note': f'killed after {at} cells' if at is not None else ''})
    finally: client.close(); cluster.close()
    ref = tables['serial (this process)']
    for name, t in tables.items(): pd.testing.assert_frame_equal(t, ref, check_exact=True, obj=name)
    print(f"every Dask table equals the serial one ({len(ref)} sets, {rows[0]['cells']} cells each)\n")
    df = pd.DataFrame(rows)
    df['vs serial'] = df['cells/s'] / df['cells/s'].iloc[0]
    print(df.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print(f"\nseconds: one wall time per run (the cluster's start, {started:.1f} s, not included; its workers load each "
          "symbol-day once); vs serial = cells/s over the serial run's")


if __name__ == '__main__':
    main()
