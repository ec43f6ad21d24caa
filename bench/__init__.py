"""Benchmarks: run with `make bench` (each script also runs alone: `python -m bench.NAME`)."""
