"""Benchmarks: the MLPerf LoadGen wrapper every latency / throughput figure comes from."""
