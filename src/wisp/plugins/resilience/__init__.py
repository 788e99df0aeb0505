"""Resilience: named policies of patterns (circuit breaker, retry, timeout,
fallback, bulkhead, load shedding, backpressure, adaptive concurrency).

The package holds one bundled plugin per pattern and the ``resilience``
plugin that composes them; importing it registers nothing.  Bot code imports
:mod:`wisp.plugins.resilience.api`.
"""
