"""Command-line verbs of the core, each imported at first use by edgeconf.cli."""
