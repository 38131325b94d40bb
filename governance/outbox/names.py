"""Every Celery task name and queue, defined once, with the queue each task goes to.

Governance queues work through the outbox by these names and never imports the workers;
the workers (`monitors.celery_app`, `monitors.tasks`, `monitors.schedule`) register and
route their tasks by the same names, so a rename happens here or nowhere.
"""

from __future__ import annotations

GATES_QUEUE = "gates"  # evaluation gate runs (and the shards of a sharded one)
MONITORING_QUEUE = "monitoring"  # dispatch, drift checks, rollout analyses, outbox sweep, audit checkpoints
ROLLBACK_QUEUE = "rollback"  # guarded automatic rollbacks, apart so a backlog of checks never delays one
QUEUES = (GATES_QUEUE, MONITORING_QUEUE, ROLLBACK_QUEUE)

GATE_TASK = "evaluators.run_gate"
# The sharded gate: the shards run in parallel on the gate workers, the finisher merges them.
GATE_SHARD_TASK = "evaluators.gate_shard"
GATE_FINISH_TASK = "evaluators.gate_finish"
# An existing version gated again under a deployment's current gate policy (one worker).
REGATE_TASK = "evaluators.run_regate"
RUN_CHECK_TASK = "monitors.run_check"
DISPATCH_CHECKS_TASK = "monitors.dispatch_checks"
SWEEP_OUTBOX_TASK = "monitors.sweep_outbox"
AUDIT_CHECKPOINT_TASK = "monitors.audit_checkpoint"
ROLLBACK_TASK = "monitors.auto_rollback"
# A rollout's paired analysis (one verdict per look), and the dispatcher that queues it per interval.
EVALUATE_ROLLOUT_TASK = "monitors.evaluate_rollout"
DISPATCH_ROLLOUTS_TASK = "monitors.dispatch_rollouts"

QUEUE_OF: dict[str, str] = {
    GATE_TASK: GATES_QUEUE,
    GATE_SHARD_TASK: GATES_QUEUE,
    GATE_FINISH_TASK: GATES_QUEUE,
    REGATE_TASK: GATES_QUEUE,
    RUN_CHECK_TASK: MONITORING_QUEUE,
    DISPATCH_CHECKS_TASK: MONITORING_QUEUE,
    SWEEP_OUTBOX_TASK: MONITORING_QUEUE,
    AUDIT_CHECKPOINT_TASK: MONITORING_QUEUE,
    ROLLBACK_TASK: ROLLBACK_QUEUE,
    EVALUATE_ROLLOUT_TASK: MONITORING_QUEUE,
    DISPATCH_ROLLOUTS_TASK: MONITORING_QUEUE,
}
