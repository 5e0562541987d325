"""The HTTP side of a node: one aiohttp application per node (:mod:`roost.http.app`), its
routes in one module per concern, served by :mod:`roost.http.server`."""
