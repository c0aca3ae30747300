"""Benchmarks for the fanout control plane: `make bench` runs them all (bench.run_all).

They print figures and write them as JSON under bench/results/; they never assert times.
"""
