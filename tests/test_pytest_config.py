"""The project's pytest configuration reports a failing Hypothesis property with its counterexample.

``filterwarnings = ["error"]`` once turned every failing property into an INTERNALERROR: Hypothesis explains a
failure with libcst, whose import raises a DeprecationWarning (``mypy_extensions.TypedDict``), and the report
crashed before the counterexample was printed. pyproject.toml ignores that one warning.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_a_failing_property_shows_its_counterexample_under_the_projects_warning_filters(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_property="""
        from hypothesis import given, strategies as st

        @given(st.integers())
        def test_small(n):
            assert n < 10
        """
    )
    result = pytester.runpytest_subprocess(
        "-c", str(PYPROJECT), "--rootdir", str(pytester.path), "-p", "no:cacheprovider", "test_property.py"
    )
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output[-3000:]
    assert result.parseoutcomes().get("failed") == 1, output[-3000:]
    assert "n=10" in output  # the counterexample (the smallest failing integer)
