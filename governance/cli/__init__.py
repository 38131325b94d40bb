"""The ``govern`` command line: the one composition root allowed to import every package.

Every ``govern`` process (worker, train, serve, gate, demo and the processes the demo
starts) makes OpenMP's idle threads sleep at once instead of spinning
(``OMP_WAIT_POLICY=PASSIVE``, unless the variable is set): torch's default spin-wait makes
two torch processes on the same cores steal each other's time. It is set here, before
any command can import torch, which reads it once. bench/bench_contention.py measures
it; docs/operations.md ("Threads per process") says how to size threads.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
