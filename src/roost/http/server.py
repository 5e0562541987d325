"""The HTTP listener of a node, on its own port (``http_host``/``http_port``)."""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger("roost.http")


class HttpServer:
    """Serves one aiohttp application; ``port`` is the bound one (``0`` picks a free port)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    @property
    def app(self) -> web.Application:
        return self._runner.app

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("http listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
