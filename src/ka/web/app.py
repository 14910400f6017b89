"""The dashboard as an ASGI application: three pages, their files, and /api/v1/.

GET /api/v1/deployment            the live deployment (404 when `ka web` serves history only)
GET /api/v1/nodes[?state=S&failures=first]   its nodes in chain order
GET /api/v1/nodes/{key}           one node, with its timeline and its events
GET /api/v1/nodes/{key}/log       its live log, fetched from its status service now
GET /api/v1/nodes/{key}/log/follow   the same, followed: server-sent events as lines come
GET /api/v1/events[?after=V]      server-sent events: what changed after version V
GET /api/v1/history               past deployments, the newest first
GET /api/v1/history/{name}        one of them (PREFIX or PREFIX/wave-N), every node's report
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ka.errors import KaError
from ka.web import history
from ka.web.access import TokenGate
from ka.web.state import Deployment

STATIC = Path(__file__).parent / "static"
POLL = 0.25  # seconds between two looks at the model for an event stream
KEEPALIVE = 15.0
LOG_FETCHES = 4  # node logs fetched at once, at most (each holds a thread for ~1 s)
LOG_FOLLOWS = 8  # node logs followed at once, at most (each holds a thread meanwhile)
STATES = ("waiting", "active", "done", "failed", "evicted", "installed", "running")

NodeLog = Callable[[str], tuple[str, list[str]]]  # node address -> (step, lines)
# node address, put, stopped: see ka.web.nodelog.follow_log
FollowLog = Callable[[str, Callable[[tuple[Any, ...]], None], Callable[[], bool]], None]


def create_app(live: Deployment | None, logs: Path, token: str, *,
               node_log: NodeLog | None = None, follow_log: FollowLog | None = None,
               closing: threading.Event | None = None) -> Any:
    closing = closing or threading.Event()
    fetches = asyncio.Semaphore(LOG_FETCHES)
    follows = [0]

    def need_live() -> Deployment:
        if live is None:
            raise _Missing("no deployment runs here: this is `ka web`, the history alone")
        return live

    async def deployment(_request: Request) -> Response:
        return JSONResponse(need_live().snapshot())

    async def nodes(request: Request) -> Response:
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            return _error(400, f"state must be one of {', '.join(STATES)}")
        first = request.query_params.get("failures") == "first"
        return JSONResponse(need_live().node_rows(state, first))

    async def node(request: Request) -> Response:
        found = need_live().node(request.path_params["key"])
        if found is None:
            return _error(404, "no such node in this deployment")
        return JSONResponse(found)

    def log_address(key: str, reader: object | None) -> str | Response:
        """The node's status-service address, or the error to answer instead."""
        model = need_live()
        address = model.address_of(key)
        if model.node(key) is None:
            return _error(404, "no such node in this deployment")
        if reader is None or address is None:
            return _error(501, "no live log: the golden node cannot reach this node's "
                               "status service")
        return address

    async def node_log_view(request: Request) -> Response:
        key = request.path_params["key"]
        address = log_address(key, node_log)
        if isinstance(address, Response):
            return address
        assert node_log is not None
        async with fetches:
            try:
                step, lines = await run_in_threadpool(node_log, address)
            except KaError as e:
                return JSONResponse({"node": key, "step": None, "lines": [],
                                     "error": str(e)}, status_code=502)
        return JSONResponse({"node": key, "step": step, "lines": lines, "error": None})

    async def node_log_follow(request: Request) -> Response:
        address = log_address(request.path_params["key"], follow_log)
        if isinstance(address, Response):
            return address
        assert follow_log is not None
        if follows[0] >= LOG_FOLLOWS:
            return _error(503, f"{LOG_FOLLOWS} node logs are followed already: close one")
        follows[0] += 1
        return StreamingResponse(_follow(follow_log, address, closing, follows),
                                 media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def events(request: Request) -> Response:
        model = need_live()
        text = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        if not text.isdigit():
            return _error(400, "after must be a version number")
        return StreamingResponse(_stream(model, int(text), closing), media_type=
                                 "text/event-stream", headers={"x-accel-buffering": "no"})

    async def past(_request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(history.deployments, logs))

    async def one_past(request: Request) -> Response:
        try:
            found = await run_in_threadpool(history.deployment, logs,
                                            request.path_params["name"])
        except history.NotFound:
            return _error(404, "no such deployment in the logs directory")
        return JSONResponse(found)

    def page(name: str) -> Callable[[Request], Any]:
        async def serve(_request: Request) -> Response:
            return FileResponse(STATIC / name, media_type="text/html; charset=utf-8")
        return serve

    async def missing(_request: Request, exc: Exception) -> Response:
        return _error(404, str(exc))

    routes = [
        Route("/", page("live.html")),
        Route("/history", page("history.html")),
        Route("/deployments/{name:path}", page("deployment.html")),
        Route("/api/v1/deployment", deployment),
        Route("/api/v1/nodes", nodes),
        Route("/api/v1/nodes/{key}", node),
        Route("/api/v1/nodes/{key}/log", node_log_view),
        Route("/api/v1/nodes/{key}/log/follow", node_log_follow),
        Route("/api/v1/events", events),
        Route("/api/v1/history", past),
        Route("/api/v1/history/{name:path}", one_past),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, exception_handlers={_Missing: missing})
    return TokenGate(app, token)


class _Missing(Exception):
    pass


def _error(status: int, text: str) -> Response:
    return JSONResponse({"error": text}, status_code=status)


async def _stream(model: Deployment, after: int, closing: threading.Event
                  ) -> AsyncIterator[str]:
    """Every change after `after`, as it happens; ends once the deployment has ended and
    all of it was sent (the page then stops listening), or when the server stops, once
    what changed before is sent (the run's last change comes just before the server stops)."""
    yield "retry: 2000\n\n"
    version, idle = after, 0.0
    while True:
        # Read first: the last change is then sent before the end.
        closed, ended = closing.is_set(), model.ended is not None
        changes = model.changes(version)
        if changes is not None:
            version, idle = changes["deployment"]["version"], 0.0
            yield f"id: {version}\nevent: update\ndata: {json.dumps(changes)}\n\n"
            continue
        if ended:
            yield f"id: {version}\nevent: end\ndata: {{}}\n\n"
            return
        if closed:
            return
        if idle >= KEEPALIVE:
            idle = 0.0
            yield ": still here\n\n"
        await asyncio.sleep(POLL)
        idle += POLL


async def _follow(follow_log: FollowLog, address: str, closing: threading.Event,
                  follows: list[int]) -> AsyncIterator[str]:
    """A node's log as it comes: `step` once, `line` events, and `end` with why it ended."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    stop = threading.Event()

    def put(item: tuple[Any, ...]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server's loop has ended: nobody reads any more
            stop.set()

    def run() -> None:
        try:
            # Also ends when the server stops; the loop joins its worker threads then.
            follow_log(address, put, lambda: stop.is_set() or closing.is_set())
        except Exception as e:  # noqa: BLE001 - said to the client, which then stops
            put(("end", f"following the log failed: {e}"))

    loop.run_in_executor(None, run)
    try:
        yield "retry: 5000\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield ": still here\n\n"
                continue
            kind, *rest = item
            if kind == "step":
                yield f"event: step\ndata: {json.dumps({'step': rest[0]})}\n\n"
            elif kind == "line":
                yield f"event: line\ndata: {json.dumps({'step': rest[0], 'line': rest[1]})}\n\n"
            else:
                yield f"event: end\ndata: {json.dumps({'reason': rest[0]})}\n\n"
                return
    finally:
        stop.set()  # its thread ends within nodelog.POLL seconds
        follows[0] -= 1
