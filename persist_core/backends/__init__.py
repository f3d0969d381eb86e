"""Backends that ship with the core: file (the embedded default), memory and JSONL (log only)."""
