"""Case data the gate suites ship (written by the project; no downloads) and the scripts that build it."""
