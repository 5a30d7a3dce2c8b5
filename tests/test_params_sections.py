"""`velox run --params` runs the dark-pool detectors only: a parameter file with any other section (`accumulation:`,
or one velox does not know) is refused with one line naming the file and the section, never silently ignored."""
import subprocess, sys
from pathlib import Path
import pytest

DATA = Path(__file__).resolve().parent.parent / 'replay' / 'data'


@pytest.mark.parametrize('text, needles', [
    ('darkpool:\n  tolerance_bps: 1\naccumulation:\n  score_threshold: 2.5\n', ["section 'accumulation' is not used by velox run"]),
    ('accumulation:\n  score_threshold: 2.5\n', ["section 'accumulation' is not used by velox run"]),
    ('darkpool:\n  tolerance_bps: 1\nsmc:\n  swing: 3\n', ["unknown section 'smc'"]),
])
def test_velox_run_refuses_a_params_section_it_does_not_run(tmp_path, text, needles):
    f = tmp_path / 'tuned.yaml'
    f.write_text(text)
    r = subprocess.run([sys.executable, '-m', 'velox.face.cli', 'run', '--data-dir', str(DATA), '--symbols', 'IBM',
                        '--no-progress', '--params', str(f), '--out-dir', str(tmp_path / 'out')],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith('velox: error: ') and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    for n in [str(f), *needles]: assert n in r.stderr, (n, r.stderr)
    assert not list((tmp_path / 'out').glob('report-*.html')) if (tmp_path / 'out').exists() else True
