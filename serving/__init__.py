"""Serving: an OpenAI-compatible inference server that runs the deployment's active Aligner token.

`serving.app.create_app(ServingConfig(...))` builds the FastAPI app; `serving.engine`
batches requests onto one model thread; `serving.watcher` keeps the active token in step
with the governance API (Redis push, periodic reconcile, a per-batch fence);
`serving.recorder` records every output in PostgreSQL, spooling to disk when it is down.
During a rollout the engine decodes twins beside the served rows (shadow: the candidate's
unreturned answer; canary: the candidate answers callers in the canary and the active token
decodes the twin), and both halves of each pair are recorded.
"""
