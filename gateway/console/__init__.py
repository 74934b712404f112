"""The operator console at ``/console``: server-rendered pages for an ``admin`` client, plain forms, no script.

Pages: overview (per tenant: intake, backlog, workers, dead letters, feed head, risk flags, charts of the last
hour), dead letters (replay, discard with a reason), connectors (breaker, polls, cursors; poll now), webhooks
(lag, last delivery, failures; pause, resume, replay, replay from a cursor), validation failures (counts by type
and element path) and conformance (the latest report). Pages show ids, types, times and element paths, never
patient data. Sign-in, CSRF and headers: ``session``; what operators did: ``audit``; routes: ``routes``.
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "audit",
    "charts",
    "dead_letters",
    "ehrs",
    "hooks",
    "markdown",
    "overview",
    "recording",
    "routes",
    "session",
    "sources",
]
