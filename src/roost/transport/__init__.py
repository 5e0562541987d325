"""Network shells that feed bytes to :class:`roost.protocol.ServerConnection`."""
