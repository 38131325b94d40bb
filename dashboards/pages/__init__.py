"""One module of routes per dashboard page group; each exposes ``router``."""
