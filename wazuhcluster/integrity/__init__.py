"""File integrity layer: cluster items, metadata, comparison, container and apply.

Everything in this package is pure, blocking code (no Twisted, no network). Callers
run it on a service-owned thread pool.
"""
