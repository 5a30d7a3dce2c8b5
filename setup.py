"""velox packaging: every setting lives in settings.ini (nbdev 2.x reads the same file)."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

def reqs(key): return cfg.get(key, '').split()

services, dev = reqs('services_requirements'), reqs('dev_requirements')
setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    url=cfg['git_url'], keywords=cfg['keywords'].split(), python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=['velox', 'velox.*']), include_package_data=True,
    install_requires=reqs('requirements'),
    # [services]: Kafka, Redis, the local broker and papermill workers; [dev]: tests and notebooks too;
    # [browser]: Playwright for browser checks of dashboards (driving Debian's chromium); [gpu]: CuPy;
    # [seq]: PyTorch to fit the sequence model (velox.trade.lstm; numpy without it).
    extras_require={'services': services, 'dev': services + dev, 'browser': reqs('browser_requirements'),
                    'gpu': reqs('gpu_requirements'), 'seq': reqs('seq_requirements')},
    entry_points={'console_scripts': cfg['console_scripts'].split(), 'nbdev': ['velox=velox._modidx:d']},
    zip_safe=False,
)
