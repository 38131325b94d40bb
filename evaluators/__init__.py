"""The evaluation gate: policy checkers, statistics, Great Expectations suites, the three gate
suites, the runner and its evidence report."""
