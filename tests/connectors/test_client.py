"""The EHR client against respx: retries where safe, Retry-After, token refresh, breaker, rate limit, URL guard."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx

from connectors import (
    CircuitOpen,
    CountingObserver,
    PreconditionFailed,
    Rejected,
    TransientStatus,
    TransportError,
    UnexpectedRedirect,
    UnsafeURL,
)
from tests.connectors.conftest import (
    BASE,
    CLIENT_ID,
    TOKEN_URL,
    FakeTime,
    MakeClient,
    ehr_config,
    outcome,
    searchset,
    token_answer,
)

APPOINTMENT = {"resourceType": "Appointment", "id": "a1", "status": "booked", "participant": []}


def _assertion(request: httpx.Request) -> dict[str, str]:
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    return form


async def test_503_then_429_with_retry_after_then_200(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime, observer: CountingObserver
) -> None:
    with respx.mock(assert_all_called=True) as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        search = router.get(f"{BASE}/Appointment").mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(429, headers={"Retry-After": "7"}),
                httpx.Response(200, json=searchset([APPOINTMENT])),
            ]
        )
        async with make_client(ehr_config(key_file)) as client:
            bundle = await client.search("Appointment", [("_count", "10")])
    assert bundle["entry"][0]["resource"]["id"] == "a1"
    assert search.call_count == 3
    # The first wait is the exponential backoff (0.5 s base, jittered), the second exactly what the EHR asked.
    assert len(fake_time.slept) == 2 and 0.5 <= fake_time.slept[0] <= 1.0 and fake_time.slept[1] == 7
    assert observer.counts["retries"] == 2 and observer.counts["rate_limited"] == 1
    assert all(call.request.headers["authorization"] == "Bearer access-1" for call in search.calls)


async def test_retry_after_as_an_http_date(make_client: MakeClient, key_file: Path, fake_time: FakeTime) -> None:
    later = datetime.fromtimestamp(fake_time.now + 12, UTC)
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.get(f"{BASE}/Appointment/a1").mock(
            side_effect=[
                httpx.Response(503, headers={"Retry-After": format_datetime(later, usegmt=True)}),
                httpx.Response(200, json=APPOINTMENT, headers={"ETag": 'W/"4"'}),
            ]
        )
        async with make_client(ehr_config(key_file)) as client:
            resource = await client.read("Appointment", "a1")
    assert fake_time.slept == [12]
    assert resource["meta"]["versionId"] == "4"


async def test_a_retry_after_longer_than_the_cap_is_left_to_the_caller(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").respond(503, headers={"Retry-After": "3600"})
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(TransientStatus) as raised:
                await client.search("Appointment", [])
    assert route.call_count == 1 and fake_time.slept == []
    assert raised.value.retry_after == 3600


async def test_attempts_stop_at_max_attempts(make_client: MakeClient, key_file: Path, fake_time: FakeTime) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").respond(502)
        async with make_client(ehr_config(key_file, breaker_failures=10)) as client:
            with pytest.raises(TransientStatus):
                await client.search("Appointment", [])
    assert route.call_count == 4 and len(fake_time.slept) == 3


async def test_the_total_retry_budget_caps_attempts(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").respond(503, headers={"Retry-After": "8"})
        config = ehr_config(key_file, max_attempts=10, max_retry_seconds=20, breaker_failures=10)
        async with make_client(config) as client:
            with pytest.raises(TransientStatus):
                await client.search("Appointment", [])
    assert fake_time.slept == [8, 8] and route.call_count == 3


async def test_transport_errors_are_retried_for_a_get(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.ReadTimeout("slow"),
                httpx.Response(200, json=searchset([])),
            ]
        )
        async with make_client(ehr_config(key_file)) as client:
            await client.search("Appointment", [])
    assert route.call_count == 3


async def test_an_expired_token_is_refreshed_once(
    make_client: MakeClient, key_file: Path, observer: CountingObserver
) -> None:
    with respx.mock() as router:
        token = router.post(TOKEN_URL).mock(
            side_effect=[httpx.Response(200, json=token_answer("old")), httpx.Response(200, json=token_answer("new"))]
        )
        route = router.get(f"{BASE}/Appointment").mock(
            side_effect=[httpx.Response(401), httpx.Response(200, json=searchset([]))]
        )
        async with make_client(ehr_config(key_file)) as client:
            await client.search("Appointment", [])
    assert token.call_count == 2 and route.call_count == 2
    assert [c.request.headers["authorization"] for c in route.calls] == ["Bearer old", "Bearer new"]
    jtis = {jwt.decode(_assertion(c.request)["client_assertion"], options={"verify_signature": False})["jti"]
            for c in token.calls}  # fmt: skip
    assert len(jtis) == 2  # a fresh assertion each time
    assert observer.counts["retries"] == 0  # a refresh is not a retry


async def test_a_401_after_the_refresh_is_not_refreshed_again(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        token = router.post(TOKEN_URL).mock(
            side_effect=[httpx.Response(200, json=token_answer(f"t{i}")) for i in range(3)]
        )
        route = router.get(f"{BASE}/Appointment").respond(401)
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(Exception, match="401"):
                await client.search("Appointment", [])
    assert token.call_count == 2 and route.call_count == 2


async def test_the_token_is_cached_until_a_minute_before_it_expires(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime
) -> None:
    with respx.mock() as router:
        token = router.post(TOKEN_URL).mock(
            side_effect=[httpx.Response(200, json=token_answer(f"t{i}", expires_in=600)) for i in range(3)]
        )
        route = router.get(f"{BASE}/Appointment").respond(200, json=searchset([]))
        async with make_client(ehr_config(key_file)) as client:
            await client.search("Appointment", [])
            fake_time.advance(539)
            await client.search("Appointment", [])
            fake_time.advance(1)  # now a minute before expiry
            await client.search("Appointment", [])
    assert token.call_count == 2
    assert [c.request.headers["authorization"] for c in route.calls] == ["Bearer t0", "Bearer t0", "Bearer t1"]
    form = _assertion(token.calls[0].request)
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["scope"] == "system/Appointment.rs system/Communication.cs"
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == CLIENT_ID and claims["aud"] == TOKEN_URL


async def test_a_4xx_is_not_retried_and_carries_the_ehrs_issues(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").respond(400, json=outcome("invalid", "unknown parameter foo"))
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(Rejected) as raised:
                await client.search("Appointment", [("foo", "1")])
    assert route.call_count == 1 and fake_time.slept == []
    assert raised.value.status == 400 and raised.value.issues[0]["diagnostics"] == "unknown parameter foo"


async def test_a_post_without_if_none_exist_is_never_retried(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.post(f"{BASE}/Communication").mock(
            side_effect=[httpx.Response(503), httpx.Response(201, headers={"Location": f"{BASE}/Communication/c1"})]
        )
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(TransientStatus):
                await client.create("Communication", {"resourceType": "Communication"}, if_none_exist=None)
            assert route.call_count == 1
            with pytest.raises(TransportError):
                route.mock(side_effect=httpx.ReadError("reset"))
                await client.create("Communication", {"resourceType": "Communication"}, if_none_exist=None)
    assert route.call_count == 2


async def test_a_conditional_create_is_retried_and_reports_id_and_version(
    make_client: MakeClient, key_file: Path
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.post(f"{BASE}/Communication").mock(
            side_effect=[
                httpx.Response(503),
                httpx.ReadError("reset"),
                httpx.Response(201, headers={"Location": f"{BASE}/Communication/c9/_history/2", "ETag": 'W/"2"'}),
            ]
        )
        async with make_client(ehr_config(key_file)) as client:
            written = await client.create(
                "Communication", {"resourceType": "Communication"}, if_none_exist="identifier=urn:x|1"
            )
    assert route.call_count == 3
    assert all(c.request.headers["if-none-exist"] == "identifier=urn:x|1" for c in route.calls)
    assert (written.status, written.rid, written.version) == (201, "c9", "2")


async def test_a_put_is_retried_only_with_if_match(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.put(f"{BASE}/Appointment/a1").mock(
            side_effect=[
                httpx.Response(504),
                httpx.Response(200, json={**APPOINTMENT, "meta": {"versionId": "5"}}),
                httpx.Response(504),
            ]
        )
        async with make_client(ehr_config(key_file)) as client:
            written = await client.update("Appointment", "a1", APPOINTMENT, if_match="4")
            assert route.calls[0].request.headers["if-match"] == 'W/"4"'
            assert (written.rid, written.version) == ("a1", "5")
            with pytest.raises(TransientStatus):
                await client.update("Appointment", "a1", APPOINTMENT, if_match=None)
    assert route.call_count == 3


async def test_a_412_is_a_precondition_failure(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.put(f"{BASE}/Appointment/a1").respond(412, json=outcome("conflict", "version mismatch"))
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(PreconditionFailed):
                await client.update("Appointment", "a1", APPOINTMENT, if_match="3")


async def test_the_breaker_opens_after_consecutive_failures_and_closes_after_a_probe(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime, observer: CountingObserver
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        route = router.get(f"{BASE}/Appointment").respond(503)
        config = ehr_config(key_file, max_attempts=1, breaker_failures=3, breaker_reset_seconds=30)
        async with make_client(config) as client:
            for _ in range(3):
                with pytest.raises(TransientStatus):
                    await client.search("Appointment", [])
            assert client.breaker.state == "open"
            with pytest.raises(CircuitOpen) as refused:
                await client.search("Appointment", [])
            assert route.call_count == 3  # refused without calling the EHR
            assert 0 < refused.value.retry_after <= 30

            fake_time.advance(30)  # half-open: one probe goes through, and fails: open again
            with pytest.raises(TransientStatus):
                await client.search("Appointment", [])
            assert client.breaker.state == "open" and route.call_count == 4

            fake_time.advance(30)
            route.respond(200, json=searchset([]))
            await client.search("Appointment", [])  # the probe succeeds: closed
            assert client.breaker.state == "closed"
            await client.search("Appointment", [])
    assert observer.circuits == ["open", "half_open", "open", "half_open", "closed"]


async def test_a_4xx_does_not_count_against_the_breaker(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.get(f"{BASE}/Appointment").respond(404, json=outcome("not-found", "no such type"))
        async with make_client(ehr_config(key_file, breaker_failures=2)) as client:
            for _ in range(4):
                with pytest.raises(Rejected):
                    await client.search("Appointment", [])
            assert client.breaker.state == "closed"


async def test_the_rate_limit_holds_calls_back(
    make_client: MakeClient, key_file: Path, fake_time: FakeTime, observer: CountingObserver
) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.get(f"{BASE}/Appointment").respond(200, json=searchset([]))
        async with make_client(ehr_config(key_file, rate_limit_per_second=2)) as client:
            for _ in range(5):
                await client.search("Appointment", [])
    # A burst of two (the token request takes one), then one call every half second.
    assert fake_time.slept and all(s == pytest.approx(0.5) for s in fake_time.slept)
    assert observer.counts["throttled"] == len(fake_time.slept) == 4


async def test_redirects_are_not_followed(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock() as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.get(f"{BASE}/Appointment").respond(302, headers={"Location": "http://127.0.0.1:9/steal"})
        async with make_client(ehr_config(key_file)) as client:
            with pytest.raises(UnexpectedRedirect):
                await client.search("Appointment", [])
        assert [call.request.url.host for call in router.calls] == ["auth.ehr.test", "ehr.test"]


async def test_only_the_base_and_token_urls_may_be_called(make_client: MakeClient, key_file: Path) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.post(TOKEN_URL).respond(200, json=token_answer())
        async with make_client(ehr_config(key_file)) as client:
            for url in (
                "https://other.test/fhir/R4/Appointment",
                "https://ehr.test/fhir/R4-other/Appointment",
                "https://ehr.test:8443/fhir/R4/Appointment",
                "http://ehr.test/fhir/R4/Appointment",
                "https://user:pw@ehr.test/fhir/R4/Appointment",
                TOKEN_URL,
            ):
                with pytest.raises(UnsafeURL):
                    await client.send("GET", url)
            with pytest.raises(UnsafeURL):
                await client.follow("https://elsewhere.test/fhir/R4/Appointment?page=2", "Appointment")
        assert router.calls.call_count == 0


async def test_references_and_attachment_urls_in_answers_are_never_fetched(
    make_client: MakeClient, key_file: Path
) -> None:
    communication = {
        "resourceType": "Communication", "id": "c1", "status": "completed",
        "subject": {"reference": "https://elsewhere.test/fhir/Patient/1"},
        "payload": [{"contentAttachment": {"url": "https://elsewhere.test/binary/1"}}],
    }  # fmt: skip
    with respx.mock() as router:  # an unmocked request would fail the test
        router.post(TOKEN_URL).respond(200, json=token_answer())
        router.get(f"{BASE}/Communication").respond(200, json=searchset([communication]))
        async with make_client(ehr_config(key_file)) as client:
            bundle = await client.search("Communication", [])
        assert {call.request.url.host for call in router.calls} == {"ehr.test", "auth.ehr.test"}
    assert bundle["entry"][0]["resource"]["id"] == "c1"


async def test_a_bearer_token_is_sent_as_configured(make_client: MakeClient) -> None:
    with respx.mock() as router:
        route = router.get(f"{BASE}/Appointment").respond(200, json=searchset([]))
        async with make_client(ehr_config(None)) as client:
            await client.search("Appointment", [("_count", "5")])
    request = route.calls[0].request
    assert request.headers["authorization"] == "Bearer static-ehr-token-0123456789"
    assert request.url.params["_count"] == "5"
