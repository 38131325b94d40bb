"""Production monitoring: sample recorded outputs per window, describe them, run drift detectors
with a stated false-alarm budget, alert, and roll back automatically where the policy allows.

Entry points: :func:`monitors.check.run_check` (one window of one deployment),
:func:`monitors.rollback.auto_rollback` (the guarded rollback), the Celery app in
:mod:`monitors.celery_app` with its tasks (:mod:`monitors.tasks`) and beat schedule
(:mod:`monitors.schedule`).
"""
