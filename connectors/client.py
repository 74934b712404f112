"""One EHR's FHIR client: a pooled ``httpx.AsyncClient`` behind a URL guard, auth, rate limit, breaker and retries.

Every request goes the same way::

    guard (base or token URL only) ─► retry policy ─┬─► token bucket ─► circuit breaker ─► one attempt
                                                    └── (only idempotent requests are tried again)

One attempt sends the request with the access token, refreshes the token once on a 401, reads the whole body
within ``timeout_seconds`` and turns what came back into a response or one of ``connectors.errors``: httpx's
exceptions are translated here, once (``_translated``), and an EHR's error status with its OperationOutcome in
``raise_for_status``. Redirects are never followed and nothing in incoming data (references, ``fullUrl``s,
attachment URLs) is ever fetched: the client only calls what its caller names, on the registered URLs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx
from tenacity import RetryCallState

from connectors.address import GuardedTransport, OutboundPolicy, refused
from connectors.auth import ClientAssertion, TokenCache, load_signing_key
from connectors.breaker import CircuitBreaker
from connectors.config import BearerAuth, EHRConfig, SmartBackendAuth
from connectors.errors import (
    AuthError,
    ConfigError,
    EHRError,
    PreconditionFailed,
    Rejected,
    ServerError,
    Timeout,
    TransientStatus,
    TransportError,
    UnexpectedRedirect,
    UnsafeURL,
)
from connectors.guard import URLGuard
from connectors.ratelimit import TokenBucket
from connectors.retry import (
    RETRY_STATUSES,
    Halted,
    RetryPolicy,
    Sleep,
    halted_error,
    is_idempotent,
    parse_retry_after,
)
from connectors.status import Observer

FHIR_JSON = "application/fhir+json"
MAX_OUTCOME_BYTES = 256 * 1024


@dataclass(frozen=True)
class Written:
    """What the EHR said about a create or an update: its status, the resource's id and version."""

    status: int
    rid: str | None
    version: str | None
    resource: dict[str, Any] | None = None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn httpx's (and asyncio's) exceptions into ours, once, at the boundary."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise Timeout(f"{what}: no complete answer in time ({type(exc).__name__})") from exc
    except httpx.RequestError as exc:
        if refused(exc):  # the address guard: not a network fault, never retried
            raise UnsafeURL(f"{what}: refused address (not allowed by the outbound policy)") from exc
        raise TransportError(f"{what}: {type(exc).__name__}") from exc


def _outcome(response: httpx.Response) -> dict[str, Any] | None:
    if len(response.content) > MAX_OUTCOME_BYTES:
        return None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None


def raise_for_status(response: httpx.Response, what: str, *, now: float) -> None:
    """Raise the error an EHR's non-2xx answer means, with its OperationOutcome and Retry-After."""
    status = response.status_code
    if status < 300:
        return
    message = f"{what}: the EHR answered {status}"
    outcome = _outcome(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    error: type[EHRError]
    if status < 400:
        error = UnexpectedRedirect
        message += " (a redirect; redirects are not followed)"
    elif status == 401:
        error = AuthError
    elif status in RETRY_STATUSES:
        error = TransientStatus
    elif status == 412:
        error = PreconditionFailed
    elif status < 500:
        error = Rejected
    else:
        error = ServerError
    raise error(message, status=status, outcome=outcome, retry_after=retry_after)


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """Return the JSON object of a 2xx answer, or raise ServerError."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        raise ServerError(f"{what}: the EHR's answer is not JSON", status=response.status_code) from None
    if not isinstance(body, dict):
        raise ServerError(f"{what}: the EHR's answer is not a JSON object", status=response.status_code)
    return body


def etag_version(value: str | None) -> str | None:
    """Return the version in an ETag (``W/"3"`` -> ``3``)."""
    if not value:
        return None
    return value.strip().removeprefix("W/").strip('"') or None


class EHRClient:
    """Call one EHR safely; open once, share, close at shutdown."""

    def __init__(
        self,
        tenant: str,
        vendor: str,
        config: EHRConfig,
        *,
        observer: Observer | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.tenant = tenant
        self.vendor = vendor
        self.config = config
        self.observer = observer or Observer()
        self._clock = clock
        self.guard = URLGuard(*config.allowed_urls())
        self.outbound = outbound or OutboundPolicy()
        for url in config.allowed_urls():
            host = urlsplit(url).hostname if url else None
            if host is not None and (why := self.outbound.refusal(host)) is not None:
                raise ConfigError(f"the EHR's URL may not be called: {why} (GATEWAY_OUTBOUND_ALLOW can allow it)")
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts,
            max_seconds=config.max_retry_seconds,
            backoff_base=config.backoff_base_seconds,
            backoff_max=config.backoff_max_seconds,
            sleep=sleep,
        )
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds, clock=monotonic)
        self.bucket = TokenBucket(config.rate_limit_per_second, clock=monotonic, sleep=sleep or asyncio.sleep)
        self.tokens: TokenCache | None = None
        self._bearer: str | None = None
        self._winding_down = asyncio.Event()
        if isinstance(config.auth, SmartBackendAuth):
            self.assertion = ClientAssertion(config.auth, load_signing_key(config.auth), clock=clock)
            self.tokens = TokenCache(self._fetch_token, clock=clock)
        elif isinstance(config.auth, BearerAuth):
            self._bearer = config.auth.token.get_secret_value()
        limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_seconds),
            limits=limits,
            follow_redirects=False,
            trust_env=False,  # no proxy or netrc from the environment: only the registered URLs, directly
            # Every connection is checked against the outbound policy where it is made (the resolved address).
            transport=transport or GuardedTransport(self.outbound, limits=limits),
            headers={"Accept": FHIR_JSON, "User-Agent": "fhir-gateway-connector"},
            event_hooks={"request": [self._check_request]},
        )

    def wind_down(self) -> None:
        """Stop retrying, the process is stopping: an attempt in flight finishes, a wait between attempts ends now,
        and no further attempt is made. The caller keeps the work for later (a write-back goes back to its retry
        queue, a poll keeps its cursor), so that a shutdown does not wait out an EHR's outage."""
        self._winding_down.set()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> EHRClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- the one way a request is sent -------------------------------------------------------------------

    async def _check_request(self, request: httpx.Request) -> None:
        self.guard.check(str(request.url))

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` below the base URL."""
        return f"{self.config.base_url}/{path.lstrip('/')}"

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> httpx.Response:
        """Send a request to the EHR's FHIR API and return its 2xx answer, retried where that is safe."""
        self.guard.check(url)
        if not self.guard.on_base(url):
            raise UnsafeURL("only the token exchange may call the token URL")
        what = what or f"{method} {self._label(url)}"
        headers = dict(headers or {})
        content = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            headers.setdefault("Content-Type", FHIR_JSON)
        retrying = self.policy.retrying(
            idempotent=is_idempotent(method, headers), before_sleep=self._retrying, halt=self._winding_down
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, url, params, content, headers, what, use_token=True)
        except Halted as halted:
            raise halted_error(halted) from None
        raise AssertionError("the retry policy ended without an outcome")  # pragma: no cover

    async def _retrying(self, _: RetryCallState) -> None:
        await self.observer.retry()

    async def _attempt(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | None,
        content: bytes | None,
        headers: dict[str, str],
        what: str,
        *,
        use_token: bool,
    ) -> httpx.Response:
        if await self.bucket.acquire() > 0:
            await self.observer.throttled()
        if use_token:
            changed = self.breaker.before_call()
            if changed:
                await self.observer.circuit(changed)
        try:
            response = await self._exchange(method, url, params, content, headers, what, use_token=use_token)
        except TransportError as exc:
            await self._failed(exc.kind, breaker=use_token)
            raise
        except BaseException:
            if use_token:
                self.breaker.release()
            raise
        status = response.status_code
        if status < 300:
            if use_token and (changed := self.breaker.success()):
                await self.observer.circuit(changed)
            await self.observer.success()
            return response
        if status == 429:
            await self.observer.rate_limited()
        try:
            raise_for_status(response, what, now=self._clock())
        except EHRError as exc:
            # An answer is a sign of life: only server failures count against the breaker.
            await self._failed(exc.kind, breaker=use_token and (status >= 500 or status == 408), answered=True)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _failed(self, kind: str, *, breaker: bool, answered: bool = False) -> None:
        if breaker:
            if changed := self.breaker.failure():
                await self.observer.circuit(changed)
        elif answered and (changed := self.breaker.success()):
            await self.observer.circuit(changed)
        await self.observer.error(kind)

    async def _exchange(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | None,
        content: bytes | None,
        headers: dict[str, str],
        what: str,
        *,
        use_token: bool,
    ) -> httpx.Response:
        """Send once (once more after refreshing a refused token), the whole body read within the time cap."""
        token = await self._access_token() if use_token else None
        query = httpx.QueryParams(list(params)) if params else None
        with _translated(what):
            async with asyncio.timeout(self.config.timeout_seconds):
                response = await self._http.request(
                    method, url, params=query, content=content, headers=self._auth(headers, token)
                )
            if response.status_code == 401 and use_token and self.tokens is not None and token is not None:
                token = await self.tokens.refresh(token)
                async with asyncio.timeout(self.config.timeout_seconds):
                    response = await self._http.request(
                        method, url, params=query, content=content, headers=self._auth(headers, token)
                    )
        return response

    @staticmethod
    def _auth(headers: dict[str, str], token: str | None) -> dict[str, str]:
        return {**headers, "Authorization": f"Bearer {token}"} if token else headers

    async def _access_token(self) -> str | None:
        if self.tokens is not None:
            return await self.tokens.get()
        return self._bearer

    async def _fetch_token(self) -> tuple[str, float | None]:
        """Exchange a fresh client assertion for an access token (retried: a token request changes nothing)."""
        auth = self.config.auth
        assert isinstance(auth, SmartBackendAuth)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        retrying = self.policy.retrying(idempotent=True, before_sleep=self._retrying, halt=self._winding_down)
        try:
            async for attempt in retrying:
                with attempt:
                    # Each attempt signs a new assertion: a jti is never sent twice.
                    content = urlencode(self.assertion.form()).encode()
                    response = await self._attempt(
                        "POST", auth.token_url, None, content, headers, "token request", use_token=False
                    )
        except Halted as halted:  # after a retryable error (a Rejected one is not retried)
            raise halted_error(halted) from None
        except Rejected as exc:
            raise AuthError(f"the token endpoint refused the client ({exc.status})", status=exc.status) from None
        body = json_body(response, "token request")
        value, expires = body.get("access_token"), body.get("expires_in")
        if not isinstance(value, str) or not value:
            raise AuthError("the token endpoint's answer has no access_token", status=response.status_code)
        return value, float(expires) if isinstance(expires, int | float) else None

    def _label(self, url: str) -> str:
        """Name a request by resource type only: ids and query values stay out of messages and logs."""
        rest = urlsplit(url).path[len(self.guard.base.path.rstrip("/")) :].strip("/")
        return rest.split("/", 1)[0] or "base"

    # -- FHIR interactions --------------------------------------------------------------------------------

    async def search(self, rtype: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """Search ``rtype`` and return the first searchset page."""
        response = await self.send("GET", self.url(rtype), params=params, what=f"search {rtype}")
        return json_body(response, f"search {rtype}")

    async def follow(self, link: str, rtype: str) -> dict[str, Any]:
        """Return the page a ``next`` link names; a link off the base URL is refused, not fetched."""
        absolute = urljoin(self.config.base_url + "/", link)
        if not self.guard.on_base(absolute):
            raise UnsafeURL(f"a next link of the {rtype} search leaves the EHR's base URL; not followed")
        response = await self.send("GET", absolute, what=f"search {rtype} (next page)")
        return json_body(response, f"search {rtype}")

    async def read(self, rtype: str, rid: str) -> dict[str, Any]:
        """Read the current version of a resource."""
        response = await self.send("GET", self.url(f"{rtype}/{rid}"), what=f"read {rtype}")
        body = json_body(response, f"read {rtype}")
        version = etag_version(response.headers.get("etag"))
        if version and not (body.get("meta") or {}).get("versionId"):
            body.setdefault("meta", {})["versionId"] = version
        return body

    async def create(self, rtype: str, resource: dict[str, Any], *, if_none_exist: str | None) -> Written:
        """POST a resource; with ``if_none_exist`` the EHR creates it only once, and the request may be retried."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        response = await self.send("POST", self.url(rtype), json_body=resource, headers=headers, what=f"create {rtype}")
        return self._written(response, rtype)

    async def update(self, rtype: str, rid: str, resource: dict[str, Any], *, if_match: str | None) -> Written:
        """PUT a resource; with ``if_match`` only over that version (and then it may be retried)."""
        headers = {"If-Match": f'W/"{if_match}"'} if if_match else {}
        body = {**resource, "id": rid}
        response = await self.send(
            "PUT", self.url(f"{rtype}/{rid}"), json_body=body, headers=headers, what=f"update {rtype}"
        )
        return self._written(response, rtype)

    def _written(self, response: httpx.Response, rtype: str) -> Written:
        """Read the resource's id and version from Location, ETag and the body, in that order of trust."""
        rid = version = None
        location = response.headers.get("location") or response.headers.get("content-location")
        if location:
            parts = [p for p in urlsplit(location).path.split("/") if p]
            if rtype in parts:
                tail = parts[parts.index(rtype) + 1 :]
                rid = tail[0] if tail else None
                if len(tail) >= 3 and tail[1] == "_history":
                    version = tail[2]
        version = etag_version(response.headers.get("etag")) or version
        resource = None
        if response.content:
            try:
                parsed = response.json()
            except (ValueError, UnicodeDecodeError):
                parsed = None
            if isinstance(parsed, dict) and parsed.get("resourceType") == rtype:
                resource = parsed
                rid = rid or (parsed.get("id") if isinstance(parsed.get("id"), str) else None)
                meta: dict[str, Any] = parsed["meta"] if isinstance(parsed.get("meta"), dict) else {}
                version = version or (meta["versionId"] if isinstance(meta.get("versionId"), str) else None)
        return Written(response.status_code, rid, version, resource)
