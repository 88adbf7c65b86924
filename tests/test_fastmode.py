import pytest

from relkd_tutorial import fast_mode


@pytest.mark.parametrize(
    ("relkd_fast", "ci", "expected"),
    [
        (None, None, False),
        (None, "true", True),
        ("0", "true", False),
        ("1", None, True),
        ("yes", "false", True),
        ("", "false", False),
    ],
)
def test_fast_mode_reads_the_environment(monkeypatch, relkd_fast, ci, expected):
    for name, value in (("RELKD_FAST", relkd_fast), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert fast_mode() is expected
