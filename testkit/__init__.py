"""Helpers that tests and benchmarks share: data makers and local servers (importable, no sys.path edits)."""
