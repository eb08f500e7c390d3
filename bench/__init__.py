"""sessiond's benchmarks: `python -m bench --help` (never part of the test suite)."""
