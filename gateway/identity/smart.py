"""What the gateway tells clients about SMART Backend Services: the token URL, ``/.well-known/smart-configuration``
and the CapabilityStatement's ``rest.security`` (so that FHIR clients discover the token endpoint)."""

from __future__ import annotations

from typing import Any

from gateway.identity.assertion import ALGORITHMS
from gateway.identity.scopes import AUDIT, PLATFORM_SCOPES, SENSITIVE

__all__ = ["OAUTH_URIS", "TOKEN_PATH", "security", "smart_configuration", "token_url"]

TOKEN_PATH = "/oauth2/token"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def token_url(public_base_url: str | None, request_base_url: str) -> str:
    """Return the token endpoint's URL: under the configured public URL, else under the URL the request came to."""
    return (public_base_url or request_base_url).rstrip("/") + TOKEN_PATH


def smart_configuration(token: str) -> dict[str, Any]:
    """Return the ``/.well-known/smart-configuration`` document."""
    return {
        "token_endpoint": token,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": ["system/*.cruds", "system/*.rs", *PLATFORM_SCOPES, SENSITIVE, AUDIT],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    }


def security(token: str) -> dict[str, Any]:
    """Return the CapabilityStatement's ``rest.security``: SMART-on-FHIR with the token URL."""
    return {
        "extension": [{"url": OAUTH_URIS, "extension": [{"url": "token", "valueUri": token}]}],
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART Backend Services (private_key_jwt), or a static bearer token",
            }
        ],
        "description": "Bearer tokens: access tokens from the token endpoint, or static tokens of the clients file.",
    }
