"""The Redis keyspace, documented in one place.

The prefix ``gw`` is configurable (``GATEWAY_KEY_PREFIX``) so that several gateways, or test runs, can share one
Redis without seeing each other.

Every key of a tenant carries the hash tag ``{tenant}`` so that Redis Cluster keeps a tenant in one slot, which
lets one Lua script write a resource version, its indexes and its job atomically.

FHIR store (what EHRs pushed, as FHIR):
  gw:{t}:cur:{type}:{id}           hash   current state: vid, lu (gateway lastUpdated), hash (content digest),
                                          deleted ("1" for a tombstone), evid / elu (the EHR's meta as received),
                                          idx (JSON list of the search-index keys this version is in)
  gw:{t}:hist:{type}:{id}          hash   vid -> the stored resource JSON of that version ("" for a tombstone)
  gw:{t}:idx:{type}:lu             zset   id -> gateway lastUpdated (epoch ms); every live resource of the type
  gw:{t}:idx:{type}:ident:{s}|{v}  set    ids with identifier system|value (and "*|{v}" for value-only search)
  gw:{t}:idx:{type}:patient:{ref}  set    ids whose patient/subject is {ref} ("Patient/123")
  gw:{t}:idx:{type}:url:{url}      set    ids of canonical resources with that url (and "{url}|{version}")
  gw:{t}:dedupe:{type}:{digest}    string id of a resource created by plain POST with that content (a retried POST
                                          answers with it instead of creating a duplicate); expires

Work queue (Redis Streams, consumer group "workers"):
  gw:{t}:inbound                   stream jobs: type, id, vid, op (upsert|delete), attempt, first_id; an entry is
                                          deleted once acknowledged, so XLEN is the backlog
  gw:{t}:retry                     zset   job JSON -> epoch seconds when it is due again (backoff)
  gw:{t}:dlq                       stream jobs that failed max-attempts times, with their error and original id

Normalized platform records and change feed:
  gw:{t}:rec:{record_type}:{id}    hash   vid (the FHIR version it came from), rev (bumped by every write;
                                          compare-and-set on it), json; aggregates (threads) have rev and json
  gw:{t}:rix:{record_type}:sort    zset   id -> the record's main date in epoch seconds (start, sent, authored)
  gw:{t}:rix:{record_type}:patient:{ref}  set   record ids by patient
  gw:{t}:rix:{record_type}:status:{status} set  record ids by normalized status
  gw:{t}:rix:{record_type}:updated zset   id -> when the record last changed (epoch seconds); deleted ones stay
  gw:{t}:deps:{key}                set    "Type/id" of resources whose mapping read {key} ("Goal/1" or
                                          "Questionnaire?url=..."); a change to {key} maps them again
  gw:{t}:feed                      stream change events: id, type, record_type, record_id, event JSON
  gw:{t}:feed:trimmed              string id of the newest event dropped by retention; cursors before it get 410

Global (no tenant):
  gw:tenants                       set    tenants that have ever written; workers read their streams
"""

from __future__ import annotations

GROUP = "workers"


def tenant_of(key: str) -> str:
    """Return the tenant named in a tenant-scoped key."""
    return key[key.index("{") + 1 : key.index("}")]


class Keyspace:
    """Build every key the gateway uses, under one prefix."""

    def __init__(self, prefix: str = "gw") -> None:
        self.prefix = prefix
        self.tenants = f"{prefix}:tenants"

    def _t(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}"

    def current(self, tenant: str, rtype: str, rid: str) -> str:
        return f"{self._t(tenant)}:cur:{rtype}:{rid}"

    def history(self, tenant: str, rtype: str, rid: str) -> str:
        return f"{self._t(tenant)}:hist:{rtype}:{rid}"

    def last_updated_index(self, tenant: str, rtype: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:lu"

    def identifier_index(self, tenant: str, rtype: str, system: str | None, value: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:ident:{'*' if system is None else system}|{value}"

    def patient_index(self, tenant: str, rtype: str, ref: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:patient:{ref}"

    def url_index(self, tenant: str, rtype: str, url: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:url:{url}"

    def dependents(self, tenant: str, key: str) -> str:
        return f"{self._t(tenant)}:deps:{key}"

    def dedupe(self, tenant: str, rtype: str, digest: str) -> str:
        return f"{self._t(tenant)}:dedupe:{rtype}:{digest}"

    def inbound(self, tenant: str) -> str:
        return f"{self._t(tenant)}:inbound"

    def retry(self, tenant: str) -> str:
        return f"{self._t(tenant)}:retry"

    def dead_letters(self, tenant: str) -> str:
        return f"{self._t(tenant)}:dlq"

    def record(self, tenant: str, record_type: str, rid: str) -> str:
        return f"{self._t(tenant)}:rec:{record_type}:{rid}"

    def record_sort_index(self, tenant: str, record_type: str) -> str:
        return f"{self._t(tenant)}:rix:{record_type}:sort"

    def record_status_index(self, tenant: str, record_type: str, status: str) -> str:
        return f"{self._t(tenant)}:rix:{record_type}:status:{status}"

    def record_updated_index(self, tenant: str, record_type: str) -> str:
        return f"{self._t(tenant)}:rix:{record_type}:updated"

    def record_patient_index(self, tenant: str, record_type: str, ref: str) -> str:
        return f"{self._t(tenant)}:rix:{record_type}:patient:{ref}"

    def feed(self, tenant: str) -> str:
        return f"{self._t(tenant)}:feed"

    def feed_trimmed(self, tenant: str) -> str:
        return f"{self._t(tenant)}:feed:trimmed"
