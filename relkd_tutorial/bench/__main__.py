"""``python -m relkd_tutorial.bench``: the benchmark's command (:func:`.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
