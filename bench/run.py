"""Run the benchmarks from a source checkout: ``python bench/run.py [bench options]``.

The same as ``backtest-persist bench [options]``; see ``bench/README.md``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persist_core.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
