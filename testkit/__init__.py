"""Helpers shared by the tests and the benchmarks: the local Hub server, corpora makers, the import graph."""
