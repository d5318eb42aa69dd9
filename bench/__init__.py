"""Benchmarks. Each prints a table and a JSON line; `make bench` runs them all, `python -m bench NAME` one."""
