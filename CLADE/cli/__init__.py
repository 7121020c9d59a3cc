"""The ``clade`` command line: one module per subcommand, registered in :mod:`CLADE.cli.main`."""
