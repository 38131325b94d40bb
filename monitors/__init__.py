"""Production monitoring: sample recorded outputs per window, describe them, run drift detectors
with a stated false-alarm budget, alert, and roll back automatically where the policy allows;
judge a rollout's paired answers (candidate beside active) and record its verdicts.

Entry points: :func:`monitors.check.run_check` (one window of one deployment),
:func:`monitors.rollback.auto_rollback` (the guarded rollback),
:func:`monitors.rollouts.evaluate_rollout` (one look at a rollout's pairs), the Celery app in
:mod:`monitors.celery_app` with its tasks (:mod:`monitors.tasks`) and beat schedule
(:mod:`monitors.schedule`).
"""
