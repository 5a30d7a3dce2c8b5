"""Runs last (files run in name order): the password planted in the session's environment (conftest.PLANTED_SECRET,
which every process the suite started inherited) is in no file the session wrote — outputs, logs, status files,
reports, executed worker notebooks, checkpoints, stores — under the session's temporary folder."""
import os
from pathlib import Path
import pytest
from conftest import PLANTED_SECRET


def files_holding(root: Path, needle: bytes) -> tuple[list, dict]:
    "The files under `root` that contain `needle`, and a count of the files read per suffix."
    hits, seen = [], {}
    for p in root.rglob('*'):
        if not p.is_file() or p.is_symlink(): continue
        seen[p.suffix] = seen.get(p.suffix, 0) + 1
        try:
            if needle in p.read_bytes(): hits.append(p)
        except OSError: pass
    return hits, seen


def test_the_search_finds_a_planted_secret(tmp_path):
    (tmp_path / 'deep' / 'er').mkdir(parents=True)
    (tmp_path / 'deep' / 'er' / 'leak.ipynb').write_bytes(b'{"x": "' + PLANTED_SECRET.encode() + b'"}')
    hits, _ = files_holding(tmp_path, PLANTED_SECRET.encode())
    assert [h.name for h in hits] == ['leak.ipynb']


@pytest.mark.skipif(not os.environ.get('VELOX_WHOLE_SUITE'), reason='searches what the whole suite wrote: run by tests/run.sh')
def test_no_file_the_session_wrote_holds_the_planted_secret(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    hits, seen = files_holding(root, PLANTED_SECRET.encode())
    hits = [h for h in hits if 'test_the_search_finds_a_plant' not in str(h)]  # the self-test's own planted file
    assert not hits, f"the planted secret is in: {[str(h) for h in hits][:20]}"
    # it searched what the suite wrote, not an empty folder: executed notebooks, status files, logs and reports
    assert sum(seen.values()) > 200 and all(seen.get(s, 0) for s in ('.ipynb', '.json', '.log', '.html')), seen
