"""The loader's fast path in C, built by `pip install -e .` (scripts/setup.sh); everything else is in pyproject.toml.

It is optional: where it cannot be built (no C compiler), the loader takes its Python way (see load.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("hitmetrics._fastpath", ["include/hitmetrics/_fastpath.c"], optional=True)])
