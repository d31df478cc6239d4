"""CLI sub-commands. Each module: ``HELP``, ``add_arguments(parser)``, ``run(args)``; no heavy imports at module level."""
