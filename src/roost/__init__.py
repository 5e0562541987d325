"""Roost: a clustered MQTT 3.1.1 / 5.0 message server."""

__version__ = "0.1.0"
