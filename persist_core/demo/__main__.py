"""``python -m persist_core.demo [options]`` = ``backtest-persist demo [options]``."""

import sys

from persist_core.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
