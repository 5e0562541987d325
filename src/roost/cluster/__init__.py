"""Roost nodes over Redis/Valkey: membership, the cluster route table, relaying messages
between nodes, and one owner per client id (see docs/cluster.md)."""
