"""The ``govern`` command line: the one composition root allowed to import every package."""
