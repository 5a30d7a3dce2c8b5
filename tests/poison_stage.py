"""Poison stages for tests/test_poison.py: the detect stage, unchanged, until a print of MARKER shares comes — then,
after processing the window, `raising` raises and `dying` kills its process (`os._exit`). With tests/ on PYTHONPATH a
worker runs them as its own stage: `stage_worker('poison_stage:raising_spec', ...)`, the custom worker notebook with
`stage: poison_stage:dying`."""
import os
from velox.detect.params import detect_stage
from velox.runtime.stages import DETECT_INPUTS, DETECT_OUTPUTS, StageSpec
from velox.stage import Stage

MARKER = 777777  # shares of the poison print


def _raise(): raise ValueError(f'a print of {MARKER} shares')


def _die(): os._exit(17)  # no cleanup, no exception: what a segfault or the OOM killer leaves


class Poisoned(Stage):
    "The detect stage; `on_marker()` after processing a window that holds a MARKER print (so its state has moved)."
    def __init__(self, inner:Stage, on_marker):
        super().__init__()
        self.inner, self.on_marker = inner, on_marker
        self.name, self.inputs, self.outputs, self.windowed = inner.name, inner.inputs, inner.outputs, inner.windowed

    def process_window(self, items):
        out = self.inner.process_window(items)
        if any(k == 'trade' and (b['size'] == MARKER).any() for k, b in items): self.on_marker()
        return out

    def flush(self, symbols=None): return self.inner.flush(symbols)
    def snapshot(self, symbols=None): return self.inner.snapshot(symbols)
    def restore(self, data): self.inner.restore(data)
    def forget(self, symbols): self.inner.forget(symbols)


built = []  # every stage `raising` built (a test looks at the state it ended with)


def raising(params=None) -> Stage:
    built.append(Poisoned(detect_stage(params), _raise))
    return built[-1]
def dying(params=None) -> Stage: return Poisoned(detect_stage(params), _die)


raising_spec = StageSpec('raising', raising, DETECT_INPUTS, DETECT_OUTPUTS)  # a StageSpec: its topics said
