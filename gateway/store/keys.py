"""The Redis keyspace, documented in one place.

The prefix ``gw`` is configurable (``GATEWAY_KEY_PREFIX``) so that several gateways, or test runs, can share one
Redis without seeing each other.

Every key of a tenant carries the hash tag ``{tenant}`` so that Redis Cluster keeps a tenant in one slot, which
lets one Lua script write a resource version, its indexes and its job atomically.

FHIR store (what EHRs pushed, as FHIR):
  gw:{t}:cur:{type}:{id}           hash   current state: vid, lu (gateway lastUpdated), hash (content digest),
                                          deleted ("1" for a tombstone), evid / elu (the EHR's meta as received),
                                          idx (JSON list of the index entries this version is in, each [kind, key,
                                          member]: kind "s" a set holding the id, "z" a scored zset holding the id
                                          (member: the score), "l" a lexical zset (member: the entry); from store
                                          format 2 on, packed: gateway/store/format.py)
  gw:{t}:hist:{type}:{id}          hash   vid -> the stored resource JSON of that version ("" for a tombstone)
  gw:{t}:issues:{type}:{id}        hash   vid -> the OperationOutcome JSON of the errors a tenant's lenient
                                          validation policy accepted that version with (gateway/policy.py)
  gw:{t}:vers:{type}               zset   "{id}/{vid}" -> epoch ms the version was written (type history)
  gw:{t}:vers                      zset   "{type}/{id}/{vid}" -> epoch ms the version was written (system history)
  gw:{t}:dedupe:{type}:{digest}    string id of a resource created by plain POST with that content (a retried POST
                                          answers with it instead of creating a duplicate); expires

Search indexes of the live (not deleted) resources, written with the version in the same atomic commit
(gateway/store/indexing.py says what goes in them, gateway/store/parameters.py what a parameter's values are).
``{p}`` is an R4 search parameter name; ``{v}`` parts are escaped so that no two values share a key: ``%``,
``|`` and ``*`` are written ``%25``, ``%7C`` and ``%2A``, so ``urn:s|x`` + ``y`` and ``urn:s`` + ``x|y`` differ:
  gw:{t}:idx:{type}:ids            zset   id (score 0): every live id in id order (the default search order)
  gw:{t}:idx:{type}:lu             zset   id -> gateway lastUpdated (epoch ms); every live resource of the type
  gw:{t}:idx:{type}:tok:{p}:{s}|{c} set   ids with token system {s} and code {c} (an identifier's value is its
                                          code); also "*|{c}" (any system), "{s}|*" (any code) and, for a value
                                          without a system, "|{c}"
  gw:{t}:idx:{type}:ref:{p}:{ref}  set    ids whose parameter {p} references {ref}: "Patient/123", or a canonical
                                          URL (with and without its "|version")
  gw:{t}:idx:{type}:date:{p}:lo    zset   id -> the first epoch ms parameter {p}'s values cover (-inf: open)
  gw:{t}:idx:{type}:date:{p}:hi    zset   id -> the last epoch ms they cover (+inf: open)
  gw:{t}:idx:{type}:str:{p}        zset   "{normalized text}\0{id}" (score 0; prefix search by ZRANGEBYLEX)
  gw:{t}:idx:{type}:strx:{p}       zset   "{text as sent}\0{id}" (score 0; the :exact modifier)
  gw:{t}:idx:{type}:url:{url}      set    ids of canonical resources with that url (and "{url}|{version}")

Work queue (Redis Streams, consumer group "workers"):
  gw:{t}:inbound                   stream jobs: type, id, vid, op (upsert|delete), attempt, first_id; an entry is
                                          deleted once acknowledged, so XLEN is the backlog
  gw:{t}:retry                     zset   job JSON -> epoch seconds when it is due again (backoff)
  gw:{t}:inbound:risk              stream the risk lane: jobs of QuestionnaireResponses (``lane``), read by a consumer
                                          of their own so a risk flag never waits behind other work
  gw:{t}:retry:risk                zset   the risk lane's jobs waiting to be tried again
  gw:{t}:dlq                       stream jobs of every lane that failed max-attempts times, with their error and
                                          original id (replayed onto the default lane)

Normalized platform records and change feed:
  gw:{t}:rec:{record_type}:{id}    hash   vid (the FHIR version it came from), rev (bumped by every write;
                                          compare-and-set on it), json; aggregates (threads) have rev and json
  gw:{t}:rix:{record_type}:sort    zset   id -> the record's main date in epoch seconds (start, sent, authored)
  gw:{t}:rix:{record_type}:patient:{ref}  set   record ids by patient
  gw:{t}:rix:{record_type}:status:{status} set  record ids by normalized status
  gw:{t}:rix:{record_type}:updated zset   id -> when the record last changed (epoch seconds); deleted ones stay
  gw:{t}:deps:{key}                set    "Type/id" of resources whose mapping read {key} ("Goal/1" or
                                          "Questionnaire?url=..."); a change to {key} maps them again
  gw:{t}:feed                      stream change events: e (the event JSON), type (its type), labels (its record's
                                          security-label codes, a JSON list, "" for none); older entries hold e only
  gw:{t}:feed:trimmed              string id of the newest event dropped by retention; cursors before it get 410
  gw:{t}:risk:{flag}               hash   a risk flag (gateway/platform/risk.py): id (the risk.flagged event's id),
                                          record_type, record_id, flags (JSON), raised_at (epoch s), and once they
                                          happen acknowledged_at, acknowledged_by (client), escalated_at
  gw:{t}:risk:open                 zset   flags neither acknowledged nor escalated -> raised_at (epoch s)
  gw:{t}:risk:escalated            zset   flags escalated and not yet acknowledged -> raised_at (epoch s)

Webhooks (gateway/webhooks/subscriptions.py, delivered by gateway/webhooks/delivery.py):
  gw:{t}:hooks                     zset   subscription id -> created_at (epoch seconds)
  gw:{t}:hook:{id}                 hash   id, url, events (JSON patterns), secret (to sign; never returned or
                                          logged), created_at, owner (the creating client), scopes (JSON, its scopes
                                          then), cursor (the feed entry delivered or passed over last), and while a
                                          delivery fails: pending ("feed:<entry>" | "replay:<entry>"), attempt,
                                          next_at (epoch seconds), last_error; delivered_at (epoch seconds of the
                                          last 2xx); paused ("1" while an operator paused it: no worker delivers it)
  gw:{t}:hook:{id}:lease           string the token of the worker delivering this subscription; SET NX PX, renewed,
                                          so one worker at a time delivers it; cursor moves check it
  gw:{t}:hook:{id}:dlq             stream deliveries that failed every attempt: event (feed JSON), feed_id, attempts,
                                          status, error, failed_at; capped at about 10000 entries
  gw:{t}:hook:{id}:replay          stream dead letters put back for delivery (same fields); delivered before the feed

Write-backs (gateway/writebacks/store.py creates them; connectors/delivery.py delivers them through
gateway/writebacks/queue.py):
  gw:{t}:outbound                  stream write-back jobs, consumer group "connectors" (created with id "0",
                                          MKSTREAM): writeback_id, kind (message | survey_response | appointment |
                                          appointment_cancel | treatment_plan_activity), attempt ("0"); an entry is
                                          acknowledged and deleted (XACK + XDEL) in the step that records its outcome
  gw:{t}:outbound:retry            zset   write-back jobs waiting to be tried again -> epoch seconds when due
  gw:{t}:outbound:dlq              stream write-back jobs that failed GATEWAY_WRITEBACK_MAX_ATTEMPTS times
  gw:{t}:writeback:{id}            hash   one write-back (id: a UUID4): status (queued | delivering | delivered |
                                          failed | dead_lettered), kind, created_at, updated_at (ISO UTC, Z),
                                          request (the platform's request as validated, canonical JSON), method
                                          (create | update), resource_type, resource_id (update), if_match (the
                                          EHR's versionId for an update; may be empty), if_none_exist (the identifier
                                          search of a create), resource (the FHIR JSON to send), attempts; once known:
                                          ehr_id, ehr_version (delivered), outcome (the EHR's OperationOutcome JSON,
                                          failed), error (short text, no PHI); kept (never expires)
  gw:{t}:writeback-key:{key}       string the write-back id an Idempotency-Key created; expires after
                                          GATEWAY_WRITEBACK_IDEMPOTENCY_DAYS
  (gateway/writebacks/queue.py: a delivery sets status delivering and attempts when it starts; on a transient failure
  status goes back to queued with error, and the job to outbound:retry; the DLQ entry has writeback_id, kind,
  attempt, error, original_id, failed_at)

EHR connectors (connectors/poll.py, connectors/status.py):
  gw:{t}:connector:cursor          hash   resource type -> the poll cursor (the newest meta.lastUpdated accepted, as
                                          the EHR wrote it); _last_poll -> epoch seconds of the last complete poll
  gw:{t}:connector:lease           string "<poller name>|<random>" of the poller replica polling the tenant; SET NX
                                          PX, renewed while it polls and waits; cursor writes check it
  gw:{t}:connector:status          hash   last_success, last_error (epoch seconds), last_error_kind (an error kind,
                                          no data), circuit (closed | open | half_open), circuit_changed, and
                                          counters: requests, errors, retries, rate_limited (429s), throttled
                                          (calls the connector's own rate limit held back), dead_letters (polled
                                          resources refused, all time)
  gw:{t}:connector:dead            list   the newest 1,000 polled resources the accept path refused, newest first:
                                          JSON {at, type, id, status, error (a class: issue codes and paths or an
                                          exception type)}; never content
  gw:{t}:connector:poll-now        string set by the console's "poll now" while a poller holds the lease; that
                                          poller polls at once when it sees it (GETDEL), else it expires

Operator console (gateway/console/, gateway/store/activity.py, gateway/store/rejections.py):
  gw:{t}:activity:{hour}           hash   "<what>:<minute of the hour>" -> count, for the last hour's charts
                                          (what: accepted, rejected); {hour} is epoch seconds // 3600; expires
                                          after two hours. "accepted" is written by the store's commit
  gw:{t}:rejections:{day}          hash   resources refused as invalid on UTC day {day} (YYYY-MM-DD): "<type>" ->
                                          resources, "<type>|<element path>|<issue code>" -> issues (paths without
                                          indices; never a value); expires after 8 days
  gw:{t}:console:audit             stream what operators did: at (epoch seconds), operator (client name), action
                                          (replay | replay_all | discard | poll_now | pause | resume | rewind),
                                          target (ids), count, reason; capped at about 10000 entries

Audit and rate limits (gateway/store/audit.py, gateway/access/):
  gw:{t}:audit                     stream AuditEvent-shaped entries of every read, search, write, delete, export,
                                          write-back and refused request of the tenant (gateway/store/audit.py
                                          lists the fields: ids, types, client, outcome, source address, parameter
                                          names; never content, never a token, never a parameter value); writes'
                                          entries are added by the commit that writes; entry ids are the time
                                          (epoch ms) they were added; trimmed past GATEWAY_AUDIT_RETENTION_DAYS
  gw:{~anonymous}:audit            stream the same, for refused requests whose credential names no tenant (401)
  gw:{t}:rate:{client}             hash   a client's token bucket: tokens (float), at (epoch ms of the last take);
                                          expires once it would be full again

Global (no tenant):
  gw:tenants                       set    tenants that have ever written; workers read their streams
  gw:webhook-tenants               set    tenants that have ever had a subscription; workers scan their hooks
  gw:store-format                  string the form of stored data every process writes (gateway/store/format.py;
                                          none: 1), set by `fhir-gateway store-format --set N`

SMART Backend Services (gateway/identity/): global, since a token arrives before its tenant is known:
  gw:oauth:jti:{digest}            string "1": a client assertion's jti was used (digest: SHA-256 of client id and
                                          jti); SET NX, expires when the assertion does, so no jti is used twice
  gw:oauth:token:{digest}          string an access token's grant, JSON {client, scopes} (digest: SHA-256 of the
                                          token; the token itself is never stored); expires with the token
"""

from __future__ import annotations

GROUP = "workers"
RISK_LANE = "risk"
_LANES = {"QuestionnaireResponse": RISK_LANE}


def lane(rtype: str) -> str:
    """Return the inbound lane of a resource type's jobs: ``risk`` for QuestionnaireResponses, else ``""``."""
    return _LANES.get(rtype, "")


OUTBOUND_GROUP = "connectors"  # the consumer group of every tenant's outbound (write-back) stream


def escape(value: str) -> str:
    """Escape a value for a key part, so that ``|`` and ``*`` stay separators and wildcards."""
    if "%" not in value and "|" not in value and "*" not in value:
        return value
    return value.replace("%", "%25").replace("|", "%7C").replace("*", "%2A")


def tenant_of(key: str) -> str:
    """Return the tenant named in a tenant-scoped key."""
    return key[key.index("{") + 1 : key.index("}")]


class Keyspace:
    """Build every key the gateway uses, under one prefix."""

    def __init__(self, prefix: str = "gw") -> None:
        self.prefix = prefix
        self.tenants = f"{prefix}:tenants"
        self.webhook_tenants = f"{prefix}:webhook-tenants"
        self.store_format = f"{prefix}:store-format"

    def _t(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}"  # {tenant}: a hash tag, so each tenant's keys share a cluster slot

    def current(self, tenant: str, rtype: str, rid: str) -> str:
        return f"{self._t(tenant)}:cur:{rtype}:{rid}"

    def history(self, tenant: str, rtype: str, rid: str) -> str:
        return f"{self._t(tenant)}:hist:{rtype}:{rid}"

    def issues(self, tenant: str, rtype: str, rid: str) -> str:
        return f"{self._t(tenant)}:issues:{rtype}:{rid}"

    def index_root(self, tenant: str, rtype: str) -> str:
        """Return what every index key of a type starts with (a packed ``idx`` keeps its keys without it)."""
        return f"{self._t(tenant)}:idx:{rtype}:"

    def last_updated_index(self, tenant: str, rtype: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:lu"

    def ids_index(self, tenant: str, rtype: str) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:ids"

    def token_index(self, tenant: str, rtype: str, param: str, system: str | None, code: str | None) -> str:
        """Return a token index key; ``system`` None is any system ("" none), ``code`` None any code."""
        s = "*" if system is None else escape(system)
        c = "*" if code is None else escape(code)
        return f"{self.token_prefix(tenant, rtype, param)}{s}|{c}"

    def token_prefix(self, tenant: str, rtype: str, param: str) -> str:
        """Return what every token index key of a parameter starts with (``{s}|{c}`` follows)."""
        return f"{self._t(tenant)}:idx:{rtype}:tok:{param}:"

    def reference_index(self, tenant: str, rtype: str, param: str, target: str) -> str:
        return f"{self.reference_prefix(tenant, rtype, param)}{escape(target)}"

    def reference_prefix(self, tenant: str, rtype: str, param: str) -> str:
        """Return what every reference index key of a parameter starts with (the escaped target follows)."""
        return f"{self._t(tenant)}:idx:{rtype}:ref:{param}:"

    def date_index(self, tenant: str, rtype: str, param: str, end: str) -> str:
        """Return the zset of the first (``end="lo"``) or last (``"hi"``) millisecond of a date parameter."""
        return f"{self._t(tenant)}:idx:{rtype}:date:{param}:{end}"

    def string_index(self, tenant: str, rtype: str, param: str, exact: bool = False) -> str:
        return f"{self._t(tenant)}:idx:{rtype}:{'strx' if exact else 'str'}:{param}"

    def url_index(self, tenant: str, rtype: str, url: str) -> str:
        return f"{self.url_prefix(tenant, rtype)}{url}"

    def url_prefix(self, tenant: str, rtype: str) -> str:
        """Return what every canonical URL index key of a type starts with (the URL follows, unescaped)."""
        return f"{self._t(tenant)}:idx:{rtype}:url:"

    def type_versions(self, tenant: str, rtype: str) -> str:
        return f"{self._t(tenant)}:vers:{rtype}"

    def all_versions(self, tenant: str) -> str:
        return f"{self._t(tenant)}:vers"

    def dependents(self, tenant: str, key: str) -> str:
        return f"{self._t(tenant)}:deps:{key}"

    def dedupe(self, tenant: str, rtype: str, digest: str) -> str:
        return f"{self._t(tenant)}:dedupe:{rtype}:{digest}"

    def inbound(self, tenant: str, lane: str = "") -> str:
        return f"{self._t(tenant)}:inbound" + (f":{lane}" if lane else "")

    def retry(self, tenant: str, lane: str = "") -> str:
        return f"{self._t(tenant)}:retry" + (f":{lane}" if lane else "")

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

    def risk_flag(self, tenant: str, flag: str) -> str:
        return f"{self._t(tenant)}:risk:{flag}"

    def risk_open(self, tenant: str) -> str:
        return f"{self._t(tenant)}:risk:open"

    def risk_escalated(self, tenant: str) -> str:
        return f"{self._t(tenant)}:risk:escalated"

    def webhooks(self, tenant: str) -> str:
        return f"{self._t(tenant)}:hooks"

    def webhook(self, tenant: str, sid: str) -> str:
        return f"{self._t(tenant)}:hook:{sid}"

    def webhook_lease(self, tenant: str, sid: str) -> str:
        return f"{self._t(tenant)}:hook:{sid}:lease"

    def webhook_dead_letters(self, tenant: str, sid: str) -> str:
        return f"{self._t(tenant)}:hook:{sid}:dlq"

    def webhook_replay(self, tenant: str, sid: str) -> str:
        return f"{self._t(tenant)}:hook:{sid}:replay"

    def outbound(self, tenant: str) -> str:
        return f"{self._t(tenant)}:outbound"

    def outbound_retry(self, tenant: str) -> str:
        return f"{self._t(tenant)}:outbound:retry"

    def outbound_dead_letters(self, tenant: str) -> str:
        return f"{self._t(tenant)}:outbound:dlq"

    def writeback(self, tenant: str, wid: str) -> str:
        return f"{self._t(tenant)}:writeback:{wid}"

    def writeback_key(self, tenant: str, idempotency_key: str) -> str:
        return f"{self._t(tenant)}:writeback-key:{idempotency_key}"

    def connector_cursor(self, tenant: str) -> str:
        return f"{self._t(tenant)}:connector:cursor"

    def connector_lease(self, tenant: str) -> str:
        return f"{self._t(tenant)}:connector:lease"

    def connector_status(self, tenant: str) -> str:
        return f"{self._t(tenant)}:connector:status"

    def connector_poll_now(self, tenant: str) -> str:
        return f"{self._t(tenant)}:connector:poll-now"

    def connector_dead_letters(self, tenant: str) -> str:
        return f"{self._t(tenant)}:connector:dead"

    def activity(self, tenant: str, hour: int) -> str:
        return f"{self._t(tenant)}:activity:{hour}"

    def rejections(self, tenant: str, day: str) -> str:
        return f"{self._t(tenant)}:rejections:{day}"

    def audit(self, tenant: str) -> str:
        return f"{self._t(tenant)}:audit"

    def rate_bucket(self, tenant: str, client: str) -> str:
        return f"{self._t(tenant)}:rate:{escape(client)}"

    def console_audit(self, tenant: str) -> str:
        return f"{self._t(tenant)}:console:audit"

    def oauth_jti(self, digest: str) -> str:
        return f"{self.prefix}:oauth:jti:{digest}"

    def oauth_token(self, digest: str) -> str:
        return f"{self.prefix}:oauth:token:{digest}"
