"""``python -m relkd_tutorial.bench``: the benchmark's command (:func:`.cli.main`)."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
