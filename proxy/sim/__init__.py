"""The simulated upstream (demo, tests, bench)."""
