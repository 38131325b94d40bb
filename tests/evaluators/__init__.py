"""Tests of the evaluation gate (checkers, statistics, expectations, suites, runner, store, CLI)."""
