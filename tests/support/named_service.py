"""A small HTTP + websocket app for the named-service tests, launched by
jupyter-server-proxy as ``python named_service.py <port>`` (``{port}`` in
``c.ServerProxy.servers``). ``GET /…`` answers what it saw; ``/ws`` echoes;
``/pid`` says which process answered (one launch for many requests)."""

from __future__ import annotations

import asyncio
import os
import sys

from tornado import web, websocket


class Seen(web.RequestHandler):
    def get(self, path: str) -> None:
        self.write(
            {
                "service": "echo-app",
                "path": self.request.path,
                "query": self.request.query,
                "headers": {k.lower(): v for k, v in self.request.headers.get_all()},
                "pid": os.getpid(),
            }
        )


class Echo(websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port: int) -> None:
    app = web.Application([(r"/ws", Echo), (r"(/.*)", Seen)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
