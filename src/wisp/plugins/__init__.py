"""Bundled plugins.  Each is registered through the ``wisp`` entry-point group,
like a third-party plugin, and can be blocked on its own."""
