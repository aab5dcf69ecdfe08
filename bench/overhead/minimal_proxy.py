"""The floor for a Python proxy: raw ASGI + one aiohttp session, forwarding bytes.

No auth, validation, metrics, logging or error mapping; served by uvicorn
exactly like the gateway (auto loop and HTTP parser: uvloop + httptools).

    python -m bench.overhead.minimal_proxy --port 9100 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


class MinimalProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.session is None:
            raise RuntimeError("the lifespan has not started the session")
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        async with self.session.request(
            scope["method"],
            self.upstream + scope["path"],
            data=body or None,
            headers={"content-type": "application/json"},
        ) as upstream:
            media_type = upstream.headers.get("content-type", "application/json")
            headers = [(b"content-type", media_type.encode())]
            await send(
                {"type": "http.response.start", "status": upstream.status, "headers": headers}
            )
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1000, limit_per_host=1000)
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    uvicorn.run(
        MinimalProxy(args.upstream),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
