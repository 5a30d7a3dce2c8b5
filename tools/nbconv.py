"""Edit a notebook as percent-format text and convert it back (the notebook stays the source of truth).

    python tools/nbconv.py nb2py nbs/market/00_nbbo.ipynb /tmp/market/00_nbbo.py   # notebook -> text
    python tools/nbconv.py py2nb /tmp/market/00_nbbo.py nbs/market/00_nbbo.ipynb   # text -> notebook (stable cell ids, nbdev_clean)

Cells: '# %%' code, '# %% [markdown]' markdown (lines prefixed '# ' are unprefixed). Cell metadata (tags) is not
kept: worker notebooks with a `parameters` cell are edited as notebooks."""
import json, sys, re
def py2nb(src, dst):
    text = open(src).read()
    parts = re.split(r'^# %%(.*)$', text, flags=re.M)
    cells = []
    for i in range(1, len(parts), 2):
        tag, body = parts[i].strip(), parts[i+1].strip('\n')
        if tag == '[markdown]':
            lines = [l[2:] if l.startswith('# ') else (l[1:] if l.startswith('#') else l) for l in body.split('\n')]
            src_lines = '\n'.join(lines)
            cells.append({"cell_type": "markdown", "metadata": {}, "source": src_lines.splitlines(True)})
        else:
            cells.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": body.splitlines(True)})
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    import hashlib, os
    stem = os.path.basename(dst)
    for k, c in enumerate(cells): c["id"] = hashlib.md5(f"{stem}-{k}".encode()).hexdigest()[:8]
    json.dump(nb, open(dst, 'w'), indent=1, ensure_ascii=False)
    import subprocess, sys as _s
    subprocess.run([os.path.join(os.path.dirname(_s.executable), 'nbdev_clean'), '--fname', dst], check=True)
def nb2py(src, dst):
    nb = json.load(open(src)); out = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown': out.append('# %% [markdown]\n' + '\n'.join('# ' + l if l else '#' for l in s.split('\n')))
        else: out.append('# %%\n' + s)
    open(dst, 'w').write('\n\n'.join(out) + '\n')
if __name__ == '__main__':
    {'py2nb': py2nb, 'nb2py': nb2py}[sys.argv[1]](sys.argv[2], sys.argv[3])
