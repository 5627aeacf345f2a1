"""A recording HTTP proxy in front of a Hasura engine (the double or a real one) on 127.0.0.1.

The module tests point the modules at ``proxy.url``; every ``POST /v1/metadata`` is recorded as
``{"type", "status", "wrote", "resource_version"}`` (``wrote``: an answered 2xx request of a modifying type),
so "a second run sends no write request" is asserted the same way against both engines. ``hooks`` are
callables(body) run before a POST is forwarded (a concurrent writer that changes the metadata through
``upstream`` directly, unrecorded).
"""

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READ_ONLY = ("export_metadata", "get_inconsistent_metadata")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):  # quiet
        pass

    def _forward(self, method, raw=None, record=None):
        p = self.server.proxy
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("content-type", "x-hasura-admin-secret", "x-hasura-role", "x-hasura-access-key")}
        req = urllib.request.Request(p.upstream + self.path, data=raw, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            status, body, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/json")
        if record is not None:  # recorded before the client sees the answer
            record(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._forward("GET")

    def do_POST(self):
        p = self.server.proxy
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        for hook in list(p.hooks):
            hook(body)
        typ = body.get("type")

        def record(status):
            with p.lock:
                p.requests.append({"type": typ, "status": status, "resource_version": body.get("resource_version"),
                                   "wrote": 200 <= status < 300 and typ not in READ_ONLY})

        self._forward("POST", raw, record)


class RecordingProxy:
    def __init__(self, upstream):
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.requests, self.hooks = [], []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.proxy = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hasura-recorder", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def clear(self):
        with self.lock:
            self.requests, self.hooks = [], []

    def writes(self):
        with self.lock:
            return [r for r in self.requests if r["wrote"]]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
