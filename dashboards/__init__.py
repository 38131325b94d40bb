"""The compliance officers' web UI, served by the API process under ``/ui``.

Server-rendered pages (Jinja2, a little plain JavaScript, plotly.js served locally) for
releases and their gate reports, four-eyes review, deployments and rollback, drift,
alerts and the audit log. The pages call the governance services, so they obey the same
roles, lifecycle table and audit trail as the HTTP API. `dashboards.app.install(app)` is the one
line the API's app factory adds; governance itself never imports this package.
"""
