"""The web server of ``spoofsdk serve`` (aiohttp, from the ``spoofsdk[serve]`` extra).

Live mode (a :class:`~spoofsdk.serve.live.LiveHub` behind it):

==================  ===========================================================================
``GET /``           the live page: annotated stream, recent decisions, per-frame JSON
``GET /stream.mjpg``  the annotated stream (``multipart/x-mixed-replace`` JPEG); each part has
                    ``X-Frame-Seq`` and ``X-Captured`` (wall-clock time the source delivered it);
                    a finished source's stream sends its last picture and ends
``GET /frame.jpg``  the newest annotated picture (``X-Frame-Seq``, ``X-Captured``, ``X-Frame-Age``);
                    503 when no picture of the newest frame can be had
``GET /events``     server-sent events: ``frame`` (the ``spoofsdk run --json`` line of every
                    frame), ``status`` and ``decisions`` (about once a second)
``GET /status``     JSON: model, frames, fps, viewers, source state
``GET /decisions``  JSON: recent decisions, newest first
==================  ===========================================================================

Demo mode serves the static in-browser demo (:mod:`spoofsdk.serve.demo`) instead.

Every endpoint is read-only: nothing writes files or accepts uploads. With a token, every
request must carry it (``?token=...`` or ``Authorization: Bearer ...``) or the session cookie
set on a response to a request that carried it, or gets 401. Without a token, only requests
whose ``Host`` names this machine by address, ``localhost`` or the ``--host`` name are
answered (403 otherwise: a DNS-rebinding page must not read the camera). Unknown paths get
404 and a list of the endpoints; stream and event connections beyond ``max_viewers`` each get
503 with ``Retry-After``; ``HEAD`` on a stream gets its headers only. A viewer that closes
its connection, or takes no data for :data:`WRITE_TIMEOUT` seconds, frees its slot. Errors
are JSON ``{"error": ...}``.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import mimetypes
import os
import secrets
import socket
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Iterable, Mapping

from aiohttp import web

from .live import LiveHub

log = logging.getLogger("spoofsdk.serve")

__all__ = ["make_live_app", "make_demo_app", "ServerThread", "run_app", "listen", "url_of", "WRITE_TIMEOUT"]

STATIC = Path(__file__).resolve().parent / "static"
LIVE_ENDPOINTS = ["/", "/stream.mjpg", "/frame.jpg", "/events", "/status", "/decisions"]
_HUB = web.AppKey("hub", LiveHub)
_WAKE = web.AppKey("wake", object)
_COUNTS = web.AppKey("counts", dict)
# aiohttp before 3.12 has no RequestKey (pyproject allows 3.9): a plain key does there.
_SET_COOKIE = web.RequestKey("set_cookie", bool) if hasattr(web, "RequestKey") else "spoofsdk_set_cookie"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # The token may be in the page's URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # Another site's page must not even embed the camera picture (an <img> needs no CORS).
    "Cross-Origin-Resource-Policy": "same-origin",
}

WRITE_TIMEOUT = 10.0
"""Seconds a stream or event viewer may take to accept the next piece before it is dropped.

A client that sends its request and never reads would otherwise hold its viewer slot (and keep
the encoder drawing for it) for as long as it likes; 10 s is far beyond any live viewer's
hiccup, and a dropped browser simply reconnects."""
WAIT_STEP = 1.0
"""Seconds a stream with nothing new to send waits before checking that its viewer is still there.

Closed connections are only noticed by looking: a stream of a camera that is down, or of a
file that has ended, writes nothing, so without this a viewer who left kept its slot."""
FRAME_WAIT = 5.0
"""Seconds ``/frame.jpg`` waits for a picture of the newest frame before answering 503."""


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = dict(_SECURITY_HEADERS)
    headers.update(extra.pop("headers", {}))
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of two strings, whatever they hold.

    Header values arrive decoded with ``surrogateescape`` (raw bytes such as ``\\xff`` become lone
    surrogates), which plain ``.encode()`` refuses; ``surrogatepass`` encodes every string, one
    way only, so any bad token is simply unequal.
    """
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8080`` -> ``::1``, ``Example.COM.:80`` -> ``example.com``)."""
    header = header.strip()
    if header.startswith("["):
        name = header[1:].partition("]")[0]
    elif header.count(":") == 1:
        name = header.partition(":")[0]
    else:
        name = header  # a bare IPv6 address, or no port
    return name.rstrip(".").lower()


def _host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's ``Host`` may be answered by a server without a token.

    DNS rebinding needs a name the attacker controls: their page's requests carry its name in
    ``Host``. A Host that is an IP address (any: the browser then treats that address as the
    page's origin, so another site cannot read the answer) or a name of this machine is safe.
    No Host at all is no browser.
    """
    if header is None:
        return True
    name = _host_name(header)
    if name in names:
        return True
    try:
        ipaddress.ip_address(name.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of the address
    except ValueError:
        return False
    return True


def _guard(token: str | None, endpoints: list[str], hosts: Iterable[str] = ()):
    """The middleware checking Host or token, and the response hook adding headers and the session cookie."""
    names = frozenset({"localhost", *(_host_name(h) for h in hosts if h)})
    # The cookie holds a random session value, not the token: it cannot leak the token, and it
    # stops working when the server restarts. Its name is per port, as browsers share cookies
    # between the ports of one host, and stays the same across restarts on that port, so a
    # restart replaces the old cookie instead of piling up new names (some hundred of them and
    # every request to the host grew past the 8 kB header limit).
    session = secrets.token_urlsafe(32)

    def cookie_name(request: web.Request) -> str:
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        return f"spoofsdk_session_{sockname[1] if sockname else 0}"

    def set_cookie(name: str) -> str:
        morsel = SimpleCookie()
        morsel[name] = session
        # HttpOnly: page scripts cannot read it; SameSite=Strict: another site's page cannot make the
        # browser send it. No Secure: the server speaks plain HTTP.
        morsel[name].update({"path": "/", "httponly": True, "samesite": "Strict"})
        return morsel[name].OutputString()

    @web.middleware
    async def guard(request: web.Request, handler):
        if token is None:
            if not _host_allowed(request.headers.get("Host"), names):
                return _error(403, f"Host {request.headers.get('Host')!r} is not a name of this server: without --token it answers only "
                              "requests to localhost, an IP address or the --host name (a guard against DNS rebinding); use one of those or start it with --token")
        else:
            given = _token_of(request)
            if given is not None:
                if not _same(given, token):
                    return _error(401, "wrong token")
                # A browser does not repeat ?token on the page's own requests (scripts, models,
                # the stream): let them in with a cookie only this site's pages send.
                request[_SET_COOKIE] = cookie_name(request)
            elif not _same(request.cookies.get(cookie_name(request), ""), session):
                return _error(401, "this server needs a token: add ?token=... to the URL or send 'Authorization: Bearer ...'")
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
        return response

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        # Here rather than in the middleware: streams send their headers before returning.
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.get(_SET_COOKIE):
            # As a header: response.set_cookie() is too late here (the cookies are already turned into headers).
            response.headers.add("Set-Cookie", set_cookie(request[_SET_COOKIE]))

    return guard, on_prepare


def _secured(token: str | None, endpoints: list[str], hosts: Iterable[str]) -> web.Application:
    guard, on_prepare = _guard(token, endpoints, hosts)
    app = web.Application(middlewares=[guard])
    app.on_response_prepare.append(on_prepare)
    return app


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


def _gone(request: web.Request) -> bool:
    """True once the viewer's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """Write to a viewer, dropping one that takes nothing for :data:`WRITE_TIMEOUT` seconds."""
    try:
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT)
    except asyncio.TimeoutError:
        # abort(), not close(): a polite close waits for the very buffer the viewer never reads.
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise ConnectionResetError(f"the viewer took no data for {WRITE_TIMEOUT:g} s") from None


async def _headers_only(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """HEAD on a stream: the headers a GET would get, no body, and the connection free for the next request."""
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await response.write_eof()
    return response


# --- live mode -------------------------------------------------------------------------------
async def _page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "live.html").read_bytes(), content_type="text/html", charset="utf-8")


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[_HUB].status())


async def _decisions(request: web.Request) -> web.Response:
    return web.json_response(request.app[_HUB].decisions())


async def _frame(request: web.Request) -> web.Response:
    hub, wake = request.app[_HUB], request.app[_WAKE]
    if hub.source_state == "error":
        # Fail closed: the last picture of a camera that is down is not what it sees now.
        return _error(503, f"the source is down ({hub.source_error}); it is reopened every {hub.reopen_delay:g} s", headers={"Retry-After": "2"})
    newest = hub.frames
    picture = hub.picture
    if picture is None or picture.seq < newest:
        # Pictures are drawn only while someone watches, so the one kept may be of an old frame
        # (showing an old label): count this request as a short viewer until the newest is drawn.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FRAME_WAIT
        hub.viewer_joined()
        try:
            while True:
                event = wake.event
                picture = hub.picture
                left = deadline - loop.time()
                if (picture is not None and picture.seq >= newest) or hub.settled or left <= 0:
                    break
                await _Wakeup.wait(event, left)
        finally:
            hub.viewer_left()
        picture = hub.picture  # again: the last one may have been stored between reading it and `settled`
    if picture is None or picture.seq < newest:
        if newest == 0:
            message = "no frame yet: the source has not delivered one"
        elif hub.settled:
            message = f"the source ended and its last frame ({newest}) has no picture (it could not be read)"
        else:
            message = f"no picture of the newest frame ({newest}) yet; try again"
        return _error(503, message, headers={"Retry-After": "1"})
    headers = {
        "X-Frame-Seq": str(picture.seq),
        "X-Captured": f"{picture.captured:.6f}",
        # How old the picture is, so that a poller can refuse an old decision (a finished file's
        # last frame, a camera that stalls) without trusting its own clock against X-Captured.
        "X-Frame-Age": f"{max(0.0, time.time() - picture.captured):.3f}",
    }
    return web.Response(body=picture.jpeg, content_type="image/jpeg", headers=headers)


async def _stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub, wake, counts = app[_HUB], app[_WAKE], app[_COUNTS]
    headers = {"Content-Type": "multipart/x-mixed-replace; boundary=frame", **_SECURITY_HEADERS}
    if request.method == "HEAD":
        return await _headers_only(request, headers)
    if counts["streams"] >= counts["max"]:
        return _too_many("stream", counts["max"])
    counts["streams"] += 1
    # The picture kept may be of a frame long gone (drawn for an earlier viewer): start with the
    # newest frame's, never flashing an old label first.
    last = max(0, hub.frames - 1)
    hub.viewer_joined()
    response = web.StreamResponse(headers=headers)
    try:
        await response.prepare(request)
        while not _gone(request):
            event = wake.event
            picture = hub.picture
            # Nothing while the camera is down: its last picture is not what it sees now.
            if picture is not None and picture.seq > last and hub.source_state != "error":
                head = (
                    f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(picture.jpeg)}\r\n"
                    f"X-Frame-Seq: {picture.seq}\r\nX-Captured: {picture.captured:.6f}\r\n\r\n"
                ).encode()
                await _send(request, response, head + picture.jpeg + b"\r\n")
                last = picture.seq
            elif hub.settled and (hub.picture is None or hub.picture.seq <= last):
                # A finished file: its last picture is sent and no other will come. End the stream
                # (the browser keeps showing the last picture) rather than hold the slot forever.
                await _send(request, response, b"--frame--\r\n")
                break
            else:
                await _Wakeup.wait(event, WAIT_STEP)
    except ConnectionError:
        pass  # the viewer went away; nothing else is affected (a cancellation, at shutdown, propagates)
    finally:
        counts["streams"] -= 1
        hub.viewer_left()
    return response


async def _events(request: web.Request) -> web.StreamResponse:
    app = request.app
    hub, wake, counts = app[_HUB], app[_WAKE], app[_COUNTS]
    headers = {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **_SECURITY_HEADERS}
    if request.method == "HEAD":
        return await _headers_only(request, headers)
    if counts["events"] >= counts["max"]:
        return _too_many("event", counts["max"])
    counts["events"] += 1
    response = web.StreamResponse(headers=headers)
    loop = asyncio.get_running_loop()
    last = max(0, hub.last_seq - 1)
    status_at = 0.0
    try:
        await response.prepare(request)
        await _send(request, response, b"retry: 2000\n\n")
        while not _gone(request):
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
                await _send(request, response, "".join(chunks).encode())
            else:
                await _Wakeup.wait(event, WAIT_STEP)
    except ConnectionError:
        pass  # as in _stream
    finally:
        counts["events"] -= 1
    return response


def make_live_app(hub: LiveHub, *, token: str | None = None, max_viewers: int = 10, hosts: Iterable[str] = ()) -> web.Application:
    """The live view's application over a started or not yet started ``hub``.

    ``hosts``: names besides ``localhost`` and IP addresses that a server without a token answers
    to in ``Host`` (the ``--host`` it listens on).
    """
    app = _secured(token, LIVE_ENDPOINTS, hosts)
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


def make_demo_app(files: Mapping[str, bytes | Path], *, token: str | None = None, hosts: Iterable[str] = ()) -> web.Application:
    """The in-browser demo: ``files`` maps names (``index.html``, ``model.onnx``, ...) to contents or paths."""
    files = dict(files)
    app = _secured(token, ["/", *("/" + n for n in sorted(files))], hosts)

    async def serve_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        if name not in files:
            raise web.HTTPNotFound()
        content = files[name]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if isinstance(content, Path):
            # Streamed from the file: reading it whole per request (the wasm is 14 MB) took
            # 1.5 GB for 60 clients. The type is set here: FileResponse's own table differs.
            return web.FileResponse(content, headers={"Content-Type": content_type})
        return web.Response(body=content, content_type=content_type)

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
        return _http_url(self.host, self.port).rstrip("/")

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


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for ``host`` and ``port`` (one per address ``host`` resolves to), not yet listening.

    Bound here rather than by aiohttp so that the banner can name the address and port really
    bound (``--port 0`` picks one). With port 0 and several addresses (``localhost``: 127.0.0.1
    and ::1) all get the first one's port.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    unsupported: OSError | None = None
    seen = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as e:
                # A family this kernel lacks (IPv6 disabled while localhost still resolves to ::1):
                # skipped, as asyncio's create_server does; an error only if nothing can be bound.
                unsupported = e
                continue
            sockets.append(sock)
            if os.name == "posix":  # as asyncio does: a restarted server can bind at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # IPv4 has its own socket when both are asked for
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets and unsupported is not None:
        raise unsupported
    return sockets


def url_of(host: str, sockets: list[socket.socket]) -> str:
    """The URL to print for a server on ``sockets`` (from :func:`listen` for ``host``)."""
    address, port = sockets[0].getsockname()[:2]
    try:
        ipaddress.ip_address(host)
        named = False
    except ValueError:
        named = bool(host)
    if named:
        shown = host  # a name the user gave (localhost) reads better than the address it resolved to
    elif address in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if address == "0.0.0.0" else "::1"  # every interface: this machine's is one
    else:
        shown = address
    return _http_url(shown, port)


def _http_url(host: str, port: int) -> str:
    """``http://host:port/``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run_app(app: web.Application, sockets: list[socket.socket], banner: str) -> None:
    """Serve on ``sockets`` (see :func:`listen`) in the foreground until Ctrl-C."""

    def announce(*_args: Any, **_kwargs: Any) -> None:
        print(banner, flush=True)

    web.run_app(app, sock=sockets, print=announce, access_log=None, shutdown_timeout=1.0)
