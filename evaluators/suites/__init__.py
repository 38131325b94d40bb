"""Gate suites (policy compliance, bias probes, reasoning regression) behind one interface and registry (``base``)."""
