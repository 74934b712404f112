"""Outbound EHR FHIR clients: SMART Backend Services auth, one retry policy, a circuit breaker and a rate limit per
EHR, incremental pull and write-back delivery.

The gateway depends on this package, never the other way round: what the connectors need from the gateway (its
outbound queue, its Redis keys, the accept path of a push) they take through the protocols ``OutboundQueue``,
``PollKeys`` and ``Sink``.
"""

from connectors.address import GuardedTransport, OutboundPolicy, RefusedAddress
from connectors.auth import ClientAssertion, TokenCache, jwks, load_signing_key, public_jwk
from connectors.breaker import CircuitBreaker
from connectors.client import EHRClient, Written
from connectors.config import BearerAuth, EHRConfig, NoAuth, PollConfig, SmartBackendAuth
from connectors.delivery import Delivery, OutboundJob, OutboundQueue, Settle, deliver
from connectors.errors import (
    AuthError,
    CircuitOpen,
    ConfigError,
    ConnectorError,
    EHRError,
    LeaseLost,
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
from connectors.poll import Poller, PollKeys, Refusal, Sink
from connectors.pool import Connectors, Target, smart_auths
from connectors.ratelimit import TokenBucket
from connectors.retry import RetryPolicy
from connectors.status import CountingObserver, Observer, RedisObserver, Status, read_status

__all__ = [
    "AuthError",
    "BearerAuth",
    "CircuitBreaker",
    "CircuitOpen",
    "ClientAssertion",
    "ConfigError",
    "ConnectorError",
    "Connectors",
    "CountingObserver",
    "Delivery",
    "EHRClient",
    "EHRConfig",
    "EHRError",
    "GuardedTransport",
    "LeaseLost",
    "NoAuth",
    "Observer",
    "OutboundJob",
    "OutboundPolicy",
    "OutboundQueue",
    "PollConfig",
    "PollKeys",
    "Poller",
    "PreconditionFailed",
    "RedisObserver",
    "Refusal",
    "RefusedAddress",
    "Rejected",
    "RetryPolicy",
    "ServerError",
    "Settle",
    "Sink",
    "SmartBackendAuth",
    "Status",
    "Target",
    "Timeout",
    "TokenBucket",
    "TokenCache",
    "TransientStatus",
    "TransportError",
    "URLGuard",
    "UnexpectedRedirect",
    "UnsafeURL",
    "Written",
    "deliver",
    "jwks",
    "load_signing_key",
    "public_jwk",
    "read_status",
    "smart_auths",
]
