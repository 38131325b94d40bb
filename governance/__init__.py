"""The control plane: settings, database, registry, lifecycle, roles, audit log, policy and the HTTP API."""
