"""The web server of ``spoofsdk serve`` (aiohttp, from the ``spoofsdk[serve]`` extra).

Live mode (a :class:`~spoofsdk.serve.live.LiveHub` behind it):

==================  ===========================================================================
``GET /``           the live page: annotated stream, recent decisions, per-frame JSON
``GET /stream.mjpg``  the annotated stream (``multipart/x-mixed-replace`` JPEG); each part has
                    ``X-Frame-Seq`` and ``X-Captured`` (wall-clock time the source delivered it)
``GET /frame.jpg``  the newest annotated picture
``GET /events``     server-sent events: ``frame`` (the ``spoofsdk run --json`` line of every
                    frame), ``status`` and ``decisions`` (about once a second)
``GET /status``     JSON: model, frames, fps, viewers, source state
``GET /decisions``  JSON: recent decisions, newest first
==================  ===========================================================================

Demo mode serves the static in-browser demo (:mod:`spoofsdk.serve.demo`) instead.

Every endpoint is read-only: nothing writes files or accepts uploads. With a token, every
request must carry it (``?token=...`` or ``Authorization: Bearer ...``) or gets 401. Unknown
paths get 404 and a list of the endpoints; stream and event connections beyond
``max_viewers`` each get 503 with ``Retry-After``. Errors are JSON ``{"error": ...}``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import threading
from pathlib import Path
from typing import Any, Mapping

from aiohttp import web

from .live import LiveHub

log = logging.getLogger("spoofsdk.serve")

__all__ = ["make_live_app", "make_demo_app", "ServerThread", "run_app"]

STATIC = Path(__file__).resolve().parent / "static"
LIVE_ENDPOINTS = ["/", "/stream.mjpg", "/frame.jpg", "/events", "/status", "/decisions"]
_HUB = web.AppKey("hub", LiveHub)
_WAKE = web.AppKey("wake", object)
_COUNTS = web.AppKey("counts", dict)
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # The token may be in the page's URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = dict(_SECURITY_HEADERS)
    headers.update(extra.pop("headers", {}))
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


def _guard(token: str | None, endpoints: list[str]):
    @web.middleware
    async def guard(request: web.Request, handler):
        if token is not None:
            given = _token_of(request)
            if given is None:
                return _error(401, "this server needs a token: add ?token=... to the URL or send 'Authorization: Bearer ...'")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "wrong token")
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            return _error(404, f"no such page: {request.path}", endpoints=endpoints)
        except web.HTTPMethodNotAllowed as e:
            return _error(405, f"{request.method} is not allowed on {request.path} (read-only server)", headers={"Allow": ",".join(sorted(e.allowed_methods))})
        except web.HTTPException as e:
            if e.status >= 400:
                return _error(e.status, e.reason)
            raise
        if not response.prepared:
            for key, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        return response

    return guard


class _Wakeup:
    """Wakes the coroutines waiting for the hub's next result or picture (notified from the hub's threads)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def notify_threadsafe(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


def _too_many(kind: str, limit: int) -> web.Response:
    return _error(503, f"too many {kind} connections: the limit is {limit}; try again later", headers={"Retry-After": "5"})


# --- live mode -------------------------------------------------------------------------------
async def _page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "live.html").read_bytes(), content_type="text/html", charset="utf-8")


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[_HUB].status())


async def _decisions(request: web.Request) -> web.Response:
    return web.json_response(request.app[_HUB].decisions())


async def _frame(request: web.Request) -> web.Response:
    hub = request.app[_HUB]
    picture = hub.picture
    if picture is None:
        # Pictures are made only while someone watches: count this request as a short viewer.
        hub.viewer_joined()
        try:
            for _ in range(50):
                event = request.app[_WAKE].event
                if hub.picture is not None:
                    break
                await _Wakeup.wait(event, 0.1)
        finally:
            hub.viewer_left()
        picture = hub.picture
    if picture is None:
        return _error(503, "no frame yet: the source has not delivered one", headers={"Retry-After": "1"})
    return web.Response(body=picture.jpeg, content_type="image/jpeg", headers={"X-Frame-Seq": str(picture.seq), "X-Captured": f"{picture.captured:.6f}"})


async def _stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub, wake, counts = app[_HUB], app[_WAKE], app[_COUNTS]
    if counts["streams"] >= counts["max"]:
        return _too_many("stream", counts["max"])
    counts["streams"] += 1
    hub.viewer_joined()
    response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame", **_SECURITY_HEADERS})
    last = 0
    try:
        await response.prepare(request)
        while True:
            event = wake.event
            picture = hub.picture
            if picture is not None and picture.seq > last:
                head = (
                    f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(picture.jpeg)}\r\n"
                    f"X-Frame-Seq: {picture.seq}\r\nX-Captured: {picture.captured:.6f}\r\n\r\n"
                ).encode()
                await response.write(head + picture.jpeg + b"\r\n")
                last = picture.seq
            else:
                await _Wakeup.wait(event, 1.0)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the viewer went away; nothing else is affected
    finally:
        counts["streams"] -= 1
        hub.viewer_left()
    return response


async def _events(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub, wake, counts = app[_HUB], app[_WAKE], app[_COUNTS]
    if counts["events"] >= counts["max"]:
        return _too_many("event", counts["max"])
    counts["events"] += 1
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **_SECURITY_HEADERS})
    loop = asyncio.get_running_loop()
    last = max(0, hub.last_seq - 1)
    status_at = 0.0
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        while True:
            event = wake.event
            new = hub.events_after(last)
            chunks = [f"id: {seq}\nevent: frame\ndata: {line}\n\n" for seq, line in new]
            if new:
                last = new[-1][0]
            now = loop.time()
            if now - status_at >= 1.0:
                status_at = now
                chunks.append(f"event: status\ndata: {json.dumps(hub.status())}\n\n")
                chunks.append(f"event: decisions\ndata: {json.dumps(hub.decisions()[:20])}\n\n")
            if chunks:
                await response.write("".join(chunks).encode())
            else:
                await _Wakeup.wait(event, 1.0)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        counts["events"] -= 1
    return response


def make_live_app(hub: LiveHub, *, token: str | None = None, max_viewers: int = 10) -> web.Application:
    """The live view's application over a started or not yet started ``hub``."""
    app = web.Application(middlewares=[_guard(token, LIVE_ENDPOINTS)])
    app[_HUB] = hub
    app[_COUNTS] = {"streams": 0, "events": 0, "max": int(max_viewers)}

    async def on_startup(app: web.Application) -> None:
        wake = _Wakeup(asyncio.get_running_loop())
        app[_WAKE] = wake
        hub.add_listener(wake.notify_threadsafe)
        if not hub.running:
            hub.start()

    async def on_shutdown(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, hub.stop)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", _page)
    app.router.add_get("/stream.mjpg", _stream)
    app.router.add_get("/frame.jpg", _frame)
    app.router.add_get("/events", _events)
    app.router.add_get("/status", _status)
    app.router.add_get("/decisions", _decisions)
    return app


# --- demo mode -------------------------------------------------------------------------------
for _ext, _type in ((".mjs", "text/javascript"), (".js", "text/javascript"), (".wasm", "application/wasm"), (".onnx", "application/octet-stream")):
    mimetypes.add_type(_type, _ext)


def make_demo_app(files: Mapping[str, bytes | Path], *, token: str | None = None) -> web.Application:
    """The in-browser demo: ``files`` maps names (``index.html``, ``model.onnx``, ...) to contents or paths."""
    files = dict(files)
    app = web.Application(middlewares=[_guard(token, ["/", *("/" + n for n in sorted(files))])])

    async def serve_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        if name not in files:
            raise web.HTTPNotFound()
        content = files[name]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = content.read_bytes() if isinstance(content, Path) else content
        return web.Response(body=body, content_type=content_type)

    app.router.add_get("/", serve_file)
    app.router.add_get("/{name}", serve_file)
    return app


# --- running ---------------------------------------------------------------------------------
class ServerThread:
    """Serve an application from a background thread (tests, benchmarks, embedding in a program).

    ``port=0`` picks a free port; :attr:`url` says where it listens.
    """

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="spoofsdk-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._setup())
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        # Streams still open at shutdown end here, not as "task destroyed" warnings.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _setup(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_app(app: web.Application, host: str, port: int, banner: str) -> None:
    """Serve in the foreground until Ctrl-C."""

    def announce(*_args: Any, **_kwargs: Any) -> None:
        print(banner, flush=True)

    web.run_app(app, host=host, port=port, print=announce, access_log=None, shutdown_timeout=1.0)
