"""Prometheus metrics of a node: the registry (an IClusterEvents observer), the reactor-lag
meter and a plain-HTTP ``/metrics`` listener of its own (``metrics`` in api.yaml)."""
