"""The HTTP API: the FastAPI app factory (`governance.api.app.create_app`), its dependencies and routes."""
