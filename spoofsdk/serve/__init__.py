"""``spoofsdk serve``: a live view in the browser, and the in-browser demo (extra ``spoofsdk[serve]``).

- :mod:`spoofsdk.serve.live`: the engine. One model loop reads the source once and runs the
  checker; an encoder thread draws and JPEG-encodes the newest frame once for all viewers,
  only while someone watches. No web library here.
- :mod:`spoofsdk.serve.app`: the web server (aiohttp, from the extra): the page, the MJPEG
  stream, per-frame JSON events (server-sent events), status; optional token.
- :mod:`spoofsdk.serve.demo`: the static in-browser demo (onnxruntime-web), servable by
  ``spoofsdk serve --demo`` and buildable to a folder by ``spoofsdk demo build OUT/``.

Nothing in this package is imported by ``import spoofsdk``; the CLI registers its commands
here without importing aiohttp, which is loaded only when ``serve`` runs.
"""
