"""The mappers' exceptions: raised only when an input cannot become a record at all.

Missing or malformed optional elements never raise; the mappers drop what they cannot read.

MappingError
 ├── WrongResourceType   the input is not a JSON object of the type the mapper maps
 ├── MissingId           the resource has no id (the gateway assigns one before mapping)
 └── TenantMismatch      a context of one tenant was applied to another tenant's record
"""

from __future__ import annotations


class MappingError(Exception):
    """Base of every error a mapper raises; messages name types and ids, never PHI."""


class WrongResourceType(MappingError):
    """The input is not a resource of the type the mapper maps."""


class MissingId(MappingError):
    """The resource has no usable id, so no record can be keyed by it."""


class TenantMismatch(MappingError):
    """A record and a context belong to different tenants."""
