"""Registry of base models, adapters and content-addressed token versions, with their lifecycle."""
