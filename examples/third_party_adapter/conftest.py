import sys
from pathlib import Path

# The example is a folder, not a package: make ``import sqlite_adapter`` work here and in spawned children.
sys.path.insert(0, str(Path(__file__).parent))
