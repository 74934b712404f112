"""A tiny EHR for tests, run as a real process on a loopback port: ``python -m tests.connectors.fake_ehr --port N``.

It plays what a connector meets over sockets:

- ``POST /oauth2/token``: SMART Backend Services. With a JWKS URL set (``POST /_control/config {"jwks_url": ...}``)
  it fetches the client's published keys and verifies the client assertion (signature, iss = sub, aud, exp, jti
  never seen before) before it answers a token; tokens it issued are required on every FHIR call.
- ``GET /fhir/{type}?_lastUpdated=gt...&_count=N``: a searchset of the seeded resources changed after that instant,
  sorted by lastUpdated, paged with ``next`` links on the same base URL, ``_sort`` echoed in the ``self`` link.
- ``POST /fhir/{type}`` with ``If-None-Exist: identifier=system|value``: creates once (201), then answers 200 with
  the same resource; ``GET /fhir/{type}/{id}``.
- Faults queued per method and path (``POST /_control/faults {"method", "path", "faults": [...]}``), one used per
  matching request: ``"503"`` (or any status), ``"reset"`` (the connection closed with a TCP RST before any
  answer), ``"slow"`` (headers at once, then the body a few bytes at a time, for seconds).
- ``GET /_control/state``: every request seen (method, path, headers of interest) and every resource created.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt


class State:
    """What the EHR holds, shared by the request threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.created: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults: dict[tuple[str, str], list[str]] = {}
        self.tokens: set[str] = set()
        self.jtis: set[str] = set()
        self.config: dict[str, Any] = {}
        self.assertions: list[dict[str, Any]] = []


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # -- plumbing -----------------------------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, method: str, path: str) -> bool:
        with STATE.lock:
            queue = STATE.faults.get((method, path)) or []
            fault = queue.pop(0) if queue else None
        if fault is None:
            return False
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return True
        if fault == "slow":
            body = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 4):
                    self.wfile.write(body[i : i + 4])
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            self.close_connection = True
            return True
        status = int(fault)
        self._send(status, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]},
                   {"Retry-After": "0"} if status in (429, 503) else None)  # fmt: skip
        return True

    def _record(self, method: str) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        with STATE.lock:
            STATE.requests.append({
                "method": method, "path": parts.path, "query": parts.query,
                "if_none_exist": self.headers.get("If-None-Exist"), "if_match": self.headers.get("If-Match"),
            })  # fmt: skip
        return parts.path, parse_qs(parts.query)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        with STATE.lock:
            ok = not STATE.config.get("jwks_url") or header.removeprefix("Bearer ") in STATE.tokens
        if not ok:
            self._send(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]})
        return ok

    # -- methods ------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, query = self._record("GET")
        if path == "/_control/state":
            with STATE.lock:
                self._send(200, {"requests": STATE.requests, "created": STATE.created, "assertions": STATE.assertions})
            return
        if self._fault("GET", path) or not self._authorized():
            return
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "fhir":
            self._search(parts[1], query)
        elif len(parts) == 3 and parts[0] == "fhir":
            with STATE.lock:
                found = STATE.resources.get(parts[1], {}).get(parts[2])
            if found:
                self._send(200, found, {"ETag": f'W/"{found["meta"]["versionId"]}"'})
            else:
                self._send(
                    404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
                )
        else:
            self._send(404)

    def _search(self, rtype: str, query: dict[str, list[str]]) -> None:
        since = (query.get("_lastUpdated") or ["gt1970-01-01T00:00:00Z"])[0].removeprefix("gt")
        count = int((query.get("_count") or ["50"])[0])
        page = int((query.get("_page") or ["0"])[0])
        with STATE.lock:
            matches = sorted(
                (r for r in STATE.resources.get(rtype, {}).values() if r["meta"]["lastUpdated"] > since),
                key=lambda r: r["meta"]["lastUpdated"],
            )
        base = f"http://{self.headers['Host']}/fhir"
        echo = [(k, v[0]) for k, v in sorted(query.items()) if k != "_page"]
        chunk = matches[page * count : (page + 1) * count]
        links = [{"relation": "self", "url": f"{base}/{rtype}?{urlencode(echo)}"}]
        if (page + 1) * count < len(matches):
            links.append({"relation": "next", "url": f"{base}/{rtype}?{urlencode([*echo, ('_page', page + 1)])}"})
        self._send(200, {
            "resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links,
            "entry": [{"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in chunk],
        })  # fmt: skip

    def do_POST(self) -> None:
        path, _ = self._record("POST")
        body = self._body()
        if path == "/_control/seed":
            with STATE.lock:
                for resource in json.loads(body)["resources"]:
                    STATE.resources.setdefault(resource["resourceType"], {})[resource["id"]] = resource
            self._send(204)
            return
        if path == "/_control/faults":
            spec = json.loads(body)
            with STATE.lock:
                STATE.faults.setdefault((spec["method"], spec["path"]), []).extend(spec["faults"])
            self._send(204)
            return
        if path == "/_control/config":
            with STATE.lock:
                STATE.config.update(json.loads(body))
            self._send(204)
            return
        if self._fault("POST", path):
            return
        if path == "/oauth2/token":
            self._token(body)
            return
        if not self._authorized():
            return
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[0] != "fhir":
            self._send(404)
            return
        self._create(parts[1], json.loads(body))

    def _create(self, rtype: str, resource: dict[str, Any]) -> None:
        condition = self.headers.get("If-None-Exist", "")
        system, _, value = condition.removeprefix("identifier=").partition("|")
        with STATE.lock:
            existing = [
                r for r in STATE.resources.get(rtype, {}).values()
                if condition and any(i.get("system") == system and i.get("value") == value
                                     for i in r.get("identifier", []))
            ]  # fmt: skip
            if existing:
                found, status = existing[0], 200
            else:
                rid = uuid.uuid4().hex[:12]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                found = {**resource, "id": rid, "meta": {"versionId": "1", "lastUpdated": stamp}}
                STATE.resources.setdefault(rtype, {})[rid] = found
                STATE.created.append(found)
                status = 201
        base = f"http://{self.headers['Host']}/fhir"
        self._send(status, found, {"Location": f"{base}/{rtype}/{found['id']}/_history/1", "ETag": 'W/"1"'})

    def _token(self, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        with STATE.lock:
            jwks_url = STATE.config.get("jwks_url")
        if jwks_url:
            try:
                with urllib.request.urlopen(jwks_url, timeout=5) as answer:  # a loopback URL the test set
                    keys = jwt.PyJWKSet.from_dict(json.loads(answer.read()))
                assertion = form["client_assertion"]
                key = keys[jwt.get_unverified_header(assertion)["kid"]]
                token_url = f"http://{self.headers['Host']}/oauth2/token"
                claims = jwt.decode(assertion, key.key, algorithms=["RS384", "ES384"], audience=token_url,
                                    options={"require": ["iss", "sub", "aud", "exp", "jti"]})  # fmt: skip
                received_at = time.time()
                assert claims["iss"] == claims["sub"] and claims["exp"] <= received_at + 300
                assert form["grant_type"] == "client_credentials"
                with STATE.lock:
                    assert claims["jti"] not in STATE.jtis
                    STATE.jtis.add(claims["jti"])
                    STATE.assertions.append(claims)
            except Exception as exc:
                self._send(401, {"error": "invalid_client", "error_description": type(exc).__name__})
                return
        token = uuid.uuid4().hex
        with STATE.lock:
            STATE.tokens.add(token)
        self.send_response(200)
        data = json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 300}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
