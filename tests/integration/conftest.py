"""Fixtures: tracked paho clients and raw MQTT clients (tests/clientfixtures.py)."""

from clientfixtures import clients, raw

__all__ = ["clients", "raw"]
