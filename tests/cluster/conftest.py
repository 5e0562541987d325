"""Fixtures of the cluster tests: a real Valkey/Redis server and real node processes."""

from clusterfixtures import clients, cluster, make_node, raw

__all__ = ["clients", "cluster", "make_node", "raw"]
