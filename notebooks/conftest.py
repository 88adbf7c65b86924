"""nbval kernels inherit this process's environment: run the notebooks in fast mode under pytest
unless the caller sets RELKD_FAST=0 (full sizes) explicitly."""

import os

os.environ.setdefault("RELKD_FAST", "1")
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
