"""The app's route dependencies run on the event loop."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router (FastAPI keeps it whole)
            yield from _routes(route.original_router.routes)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def test_every_dependency_and_handler_is_a_coroutine_function() -> None:
    """FastAPI runs a plain ``def`` dependency or handler in its thread pool: a thread hop (and its CPU) on every
    request."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1"), ClientsConfig.model_validate(CLIENTS))
    routes = list(_routes(app.routes))
    plain = {
        f"{route.path}: {call.__qualname__}"
        for route in routes
        for call in _calls(route.dependant)
        if not inspect.iscoroutinefunction(call)
    } | {
        f"{route.path}: {route.endpoint.__qualname__}"
        for route in routes
        if not inspect.iscoroutinefunction(route.endpoint)
    }
    assert len(routes) > 50 and not plain
