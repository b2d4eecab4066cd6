"""The ``alpose`` command: one thin module per subcommand (parse, call one library function, print).

Nothing imports from this package; :mod:`active.cli.main` dispatches to the others.
"""
