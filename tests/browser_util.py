"Shared by the browser tests: Debian's chromium, its headless flags, where screenshots go."
import os
from pathlib import Path
from velox.face.desk_ops import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get('VELOX_CHROMIUM', '/usr/bin/chromium')
ARGS = list(CHROMIUM_ARGS)
ARTIFACTS = ROOT / '.velox' / 'artifacts' / 'dash'
