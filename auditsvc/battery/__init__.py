"""The audit battery: loading, graph access, methods, probes and verdict.

Framework-free: this package knows torch, not Django.
"""
