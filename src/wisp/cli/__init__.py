"""The ``wisp`` command line."""
