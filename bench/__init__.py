"""`make bench`: how fast the service is from its first request, against references measured in the same run.

Entry point: `python -m bench.run` (see docs/PERFORMANCE.md). Not a test: it measures, prints one table,
and never fails on a missed goal (the table says whether each goal is met).
"""
