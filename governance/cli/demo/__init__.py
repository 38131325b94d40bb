"""The end-to-end story (`govern demo`): the product working on a real language model.

It brings up the embedded PostgreSQL and Redis (or uses the configured ones), a fresh
``govern_demo`` database, the API, a Celery worker, beat and two serving replicas as
subprocesses, then walks through: three users; three token versions trained on
SmolLM2 (two good, one bad) and submitted; the gate failing the bad one; four-eyes
review and promotion; traffic through the OpenAI client; a policy-violating traffic
shift that the monitor detects and rolls back on its own; the auditor's offline
verification of the exported log, and a tampered copy that fails. Every step checks
its outcome in the database or through the API and stops loudly with the step name.
The demo compresses time (short monitoring windows, small gate samples); its policy
file ``policies/demo.yaml`` says which numbers differ from the default and why. The
ordered steps are in ``story.py``; each chapter has its own module.
"""

from governance.cli.demo.state import DemoFailed
from governance.cli.demo.story import run

__all__ = ["DemoFailed", "run"]
