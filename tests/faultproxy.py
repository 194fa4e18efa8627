"""A fault-injecting proxy between one operator process and the API server (test
infrastructure, never product code).

The operator is given a kubeconfig that points at this proxy, on loopback, in plain
HTTP; the proxy forwards every request to the real API server with the cluster's own
credentials, streaming the answers (watches included). It counts the operator's
**writes** (POST, PUT, PATCH, DELETE), and at the chosen write ``n`` it trips:

- ``after``: the write is forwarded and answered by the API server (it landed), then
  all traffic stops before the answer reaches the operator;
- ``before``: all traffic stops and the write is never forwarded (it never landed).

Stopped traffic hangs: no request is forwarded any more and every open watch stops
delivering, as when the operator's node dies. The test then SIGKILLs the operator.

Not counted (they pass while the proxy is up, and stop with the rest): Events, which
record and change nothing, and kopf's peering keep-alives, which come when the clock
says and would make ``n`` mean something else in every run. Both are still writes of the
operator's; a crash "after an Event" is the crash before the next counted write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import yaml
from aiohttp import web
from kubernetes import client, config

Mode = Literal["after", "before"]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "host",
        "authorization",
    }
)


def counted(method: str, path: str) -> bool:
    """A write the proxy counts (see the module's docstring for what it leaves out)."""
    if method not in WRITES:
        return False
    return not ("/events" in path or "kopfpeerings" in path)


@dataclass(frozen=True)
class Write:
    """One counted write as the proxy saw it."""

    n: int
    method: str
    path: str
    status: int | None
    """The API server's answer; None when it was never forwarded."""
    at: float = 0.0
    """When the proxy received it (``time.monotonic()``)."""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class FaultProxy:
    """One proxy for one operator process; ``trip_at`` None never trips (a baseline run
    counts the scenario's writes, a standby's writes are timed), unless ``trip_on`` (method,
    path) names the write to trip at."""

    kubeconfig: Path
    trip_at: int | None = None
    mode: Mode = "after"
    trip_on: Callable[[str, str], bool] | None = None
    writes: list[Write] = field(default_factory=list)
    tripped: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    count: int = 0
    """Counted writes so far (the one that trips included)."""
    held: list[Write] = field(default_factory=list)
    """Writes the operator tried while traffic was stopped (never forwarded)."""
    _loop: asyncio.AbstractEventLoop | None = None
    _stopped: asyncio.Event | None = None

    # ---- the proxy's kubeconfig ----------------------------------------------------------

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the operator: this proxy, plain HTTP, no credentials (the proxy
        adds the cluster's)."""
        body = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(body))
        return path

    # ---- running it ----------------------------------------------------------------------

    def start(self) -> None:
        # Cut connections are the point here, not errors worth a traceback each.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # reported to start(), which re-raises
                failed.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise AssertionError("the fault proxy did not start within 30 s")
        if failed:
            raise failed[0]

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=30)

    async def _serve(self, ready: threading.Event) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        upstream = cfg.host.rstrip("/")
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {}
        token = cfg.api_key.get("authorization") if cfg.api_key else None
        if token:
            headers["Authorization"] = token
        self._stopped = asyncio.Event()
        self._down = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=0),
            timeout=timeout,
            auto_decompress=False,
            headers=headers,
        ) as session:
            self._session, self._upstream = session, upstream
            server = web.Server(self._handle)
            runner = web.ServerRunner(server, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            try:
                await self._stopped.wait()
            finally:
                self._down.set()
                await runner.cleanup()

    async def _hang(self) -> web.StreamResponse:
        """Traffic stopped: never answer (the operator is killed, or gives up on the
        request; the proxy stopping ends what is left)."""
        assert self._stopped is not None
        await self._stopped.wait()
        raise ConnectionResetError("the fault proxy stopped")

    def _trip(self) -> None:
        self._down.set()
        self.tripped.set()

    def heal(self) -> None:
        """Let traffic through again (a cut-off operator reconnects). What was held stays
        held: never forwarded, as a write whose connection was cut never arrives."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._down.clear)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._down.is_set():
            if counted(request.method, request.path):
                self.held.append(Write(0, request.method, request.path_qs, None, time.monotonic()))
            return await self._hang()
        body = await request.read()
        if self._down.is_set():
            return await self._hang()
        n = None
        received = time.monotonic()
        if counted(request.method, request.path):
            self.count += 1
            n = self.count
            if self.trip_on is not None and self.trip_on(request.method, request.path):
                self.trip_at, self.trip_on = n, None
            if n == self.trip_at and self.mode == "before":
                self.writes.append(Write(n, request.method, request.path_qs, None, received))
                self._trip()
                return await self._hang()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"
        }
        headers["Accept-Encoding"] = "identity"
        payload = None
        if body:  # its Content-Type as sent (a JSON, merge or apply patch …)
            kind = request.headers.get("Content-Type", "application/json")
            payload = aiohttp.BytesPayload(body, content_type=kind)
        async with self._session.request(
            request.method, self._upstream + request.path_qs, headers=headers, data=payload
        ) as answer:
            if n is not None:
                self.writes.append(
                    Write(n, request.method, request.path_qs, answer.status, received)
                )
                if n == self.trip_at:  # "after": it landed; the operator never hears so
                    self._trip()
            if self._down.is_set():
                return await self._hang()
            out = web.StreamResponse(
                status=answer.status,
                headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                if self._down.is_set():
                    return await self._hang()  # a watch stops delivering
                await out.write(chunk)
            await out.write_eof()
            return out


@contextmanager
def fault_proxy(
    kubeconfig: Path,
    directory: Path,
    trip_at: int | None = None,
    mode: Mode = "after",
    trip_on: Callable[[str, str], bool] | None = None,
) -> Iterator[tuple[FaultProxy, Path]]:
    """A running proxy and the kubeconfig that points at it."""
    proxy = FaultProxy(kubeconfig, trip_at, mode, trip_on)
    proxy.start()
    try:
        yield proxy, proxy.write_kubeconfig(directory / "proxy-kubeconfig")
    finally:
        proxy.stop()
