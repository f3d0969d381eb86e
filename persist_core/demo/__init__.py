"""The crash/resume demo: ``backtest-persist demo`` or ``python -m persist_core.demo``.

A simulated live strategy persists its state through the library, is killed with SIGKILL in the middle
of a trade, restarts, resumes from the persisted state and is checked against an uninterrupted run.
See ``docs/demo.md``.
"""

from persist_core.demo.runner import DemoError, DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "run_demo"]
