"""Background work on Redis Streams: the one stream-queue primitive and the worker that maps inbound FHIR.

Owns ``streams`` (consumer groups, reads, reclaim, settle, retry schedule, promote, dead letters, replay: used by
inbound jobs, write-back deliveries and webhook dead letters alike), the inbound queue's lanes, the worker loop,
and ``records``: a batch of jobs mapped to platform records and change events in one atomic commit, from what
``held`` reads for the batch in one round trip and what ``links`` reads for mappings that need other resources
(``links`` also queues the re-mapping of the records that read a changed resource).
"""

# The package's modules; each is imported where it is used, so importing the package loads none of them.
__all__ = [
    "held",
    "inbound",
    "links",
    "records",
    "streams",
    "worker",
]
