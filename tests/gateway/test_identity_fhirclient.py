"""fhirclient (the SMART on FHIR Python client) against the gateway served over real HTTP: it finds the token URL
in the CapabilityStatement's ``rest.security`` and runs the SMART Backend Services flow itself (client_credentials
with the client assertion we sign here: fhirclient takes a ready-made ``jwt_token``, it does not sign one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn
from fhirclient.client import FHIRClient
from fhirclient.models.patient import Patient

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS
from tests.gateway.smart_setup import RSA_CLIENT, assertion, smart_clients
from tests.support import free_port, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """Serve the app on a free local port (uvicorn in a thread); yield its public base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clients = ClientsConfig.model_validate(
        {**CLIENTS, "clients": [*CLIENTS["clients"], *smart_clients(scopes=["system/Patient.cruds"])]}
    )
    app = create_app(settings.model_copy(update={"public_base_url": base}), clients)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the gateway to listen")
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


def test_fhirclient_discovers_the_token_url_and_gets_a_token(served: str) -> None:
    smart = FHIRClient(
        settings={
            "app_id": RSA_CLIENT,
            "api_base": f"{served}/fhir/R4",
            "scope": "system/Patient.cruds",
            "jwt_token": assertion(aud=f"{served}/oauth2/token"),
        }
    )
    smart.prepare()  # reads /metadata: the oauth-uris extension's token URL, with a jwt_token: OAuth2
    auth = smart.server.auth
    assert auth is not None and auth.auth_type == "oauth2"
    assert auth._token_uri == f"{served}/oauth2/token"
    assert not smart.ready  # no access token yet
    smart.server.authorize()  # POST /oauth2/token: client_credentials + the client assertion
    assert smart.ready
    created = Patient(Patient({"name": [{"family": "Backend"}], "gender": "other"}).create(smart.server))
    assert Patient.read(created.id, smart.server).name[0].family == "Backend"
