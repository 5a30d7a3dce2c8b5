"""Every benchmark in bench/ runs in its --smoke mode: a small real input, all of its correctness checks (each stops the
script with the differences when velox and its reference disagree), and its table. Nothing here times anything: a
bench fails this test only by crashing, by a failed check, or by ignoring --smoke."""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKS = {'bus': [pytest.mark.kafka, pytest.mark.slow], 'json': [pytest.mark.kafka, pytest.mark.slow], 'stores': [pytest.mark.redis]}  # services each bench starts itself
BENCHES = [pytest.param(p.stem.removeprefix('bench_'), marks=MARKS.get(p.stem.removeprefix('bench_'), []))
           for p in sorted((ROOT / 'bench').glob('bench_*.py'))]


def smoke(*cmd, tmp_path, timeout=300):
    "Run `python *cmd --smoke` from the repository root; its stdout. Fails with the output's tail if it fails."
    env = {**os.environ, 'VELOX_OUT_DIR': str(tmp_path), 'VELOX_LOG_LEVEL': 'WARNING'}
    r = subprocess.run([sys.executable, *cmd, '--smoke'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} --smoke failed (rc {r.returncode}):\n{(r.stdout + r.stderr)[-6000:]}"
    return r.stdout


def test_every_known_bench_is_collected():
    names = {p.values[0] for p in BENCHES}
    assert {'bars', 'book', 'books', 'bus', 'detectors', 'execution', 'features', 'fills', 'kernels', 'l3', 'pipeline', 'scale', 'stores'} <= names, names


@pytest.mark.parametrize('name', BENCHES)
def test_bench_smoke_runs_every_check_and_prints_its_table(name, tmp_path):
    out = smoke(str(ROOT / 'bench' / f'bench_{name}.py'), tmp_path=tmp_path)
    head = out.splitlines()[0]
    assert head.startswith(f'velox bench {name}') and '· smoke' in head, f"bench_{name}.py ignored --smoke: {head!r}"


def test_velox_bench_passes_its_options_through_to_the_script(tmp_path):
    out = smoke('-m', 'velox.face.cli', 'bench', 'bars', tmp_path=tmp_path)
    assert out.splitlines()[0].startswith('velox bench bars · smoke'), out[:300]


def test_velox_bench_all_writes_one_report_with_each_bench_table(tmp_path):
    out = tmp_path / 'B.md'
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', 'bench', 'all', '--smoke', '--only', 'catalog', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, 'VELOX_OUT_DIR': str(tmp_path)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    md = out.read_text()
    assert '- commit: ' in md and '- machine: ' in md and '| [catalog](#catalog) | ok |' in md
    assert 'velox bench catalog · smoke' in md and 'vs zips' in md  # the bench's own table, with its reference column


def test_velox_bench_all_keep_reruns_some_benches_and_keeps_the_others(tmp_path):
    "--keep: the report keeps the earlier run of a bench not run now, with its own date; without it, only what ran now."
    out = tmp_path / 'B.md'
    def run(*extra):
        r = subprocess.run([sys.executable, '-m', 'velox.face.cli', 'bench', 'all', '--smoke', '--out', str(out), *extra],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, 'VELOX_OUT_DIR': str(tmp_path)})
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        return out.read_text()
    first = run('--only', 'catalog')
    line = next(ln for ln in first.splitlines() if ln.startswith('| [catalog]'))
    both = run('--only', 'validate', '--keep')
    assert line in both and '| [validate](#validate) | ok |' in both, both[:2000]  # catalog's row unchanged: its own date
    assert 'velox bench catalog · smoke' in both and 'velox bench validate · smoke' in both
    not_run = both.split('Not run for this report: ')[1].splitlines()[0].rstrip('.').split(', ')
    assert 'validate' not in not_run and 'catalog' not in not_run and 'bars' in not_run, not_run
    assert '`python bench/bench_validate.py --smoke`' in both
    alone = run('--only', 'validate', '--args', 'validate=--repeat 1')
    assert '`python bench/bench_validate.py --smoke --repeat 1`' in alone  # per-bench options reach it and the report
    assert '| [catalog]' not in alone and '| [validate](#validate) | ok |' in alone
