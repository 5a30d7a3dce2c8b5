"Shared by the browser tests: Debian's chromium, its headless flags, where screenshots go."
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get('VELOX_CHROMIUM', '/usr/bin/chromium')
ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
ARTIFACTS = ROOT / '.velox' / 'artifacts' / 'dash'
