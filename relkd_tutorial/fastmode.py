"""Fast mode: one switch that shrinks epochs and data sizes for CI and quick looks; on when
``RELKD_FAST`` is ``1``/``true``/``yes``/``on``, or when ``CI`` is ``true`` and ``RELKD_FAST`` is
not ``0``/``false``/``no``/``off``.
"""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def fast_mode() -> bool:
    """Whether fast mode is on (see the module docstring)."""
    explicit = os.environ.get("RELKD_FAST", "").strip().lower()
    if explicit in _TRUE | _FALSE:
        return explicit in _TRUE
    return os.environ.get("CI", "").strip().lower() == "true"
