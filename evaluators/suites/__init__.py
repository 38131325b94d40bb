"""Gate suites (policy compliance, bias probes, reasoning regression) behind one interface and registry (``base``).

Importing the package registers the built-in suites, so ``base.get_suite`` finds them
whichever module was imported first.
"""

from evaluators.suites import bias, compliance, reasoning  # noqa: F401  (registers the built-in suites)
