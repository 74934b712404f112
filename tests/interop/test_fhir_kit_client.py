"""fhir-kit-client (Node, unmodified) against a real ``fhir-gateway run``: ``fhir_kit_scenario.mjs`` runs every
step and prints what it saw; this test checks it.

The package is installed with npm into a cache folder outside the repository (``GATEWAY_NPM_CACHE``, default the
system's temporary folder), never into the work tree. The test skips, saying why, when ``node`` or ``npm`` is
missing or the install cannot reach the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import Server
from tests.interop.scenario import searches, seeds

pytestmark = pytest.mark.e2e

PACKAGE = "fhir-kit-client@2.0.3"
SCENARIO = Path(__file__).with_name("fhir_kit_scenario.mjs")


@pytest.fixture(scope="module")
def node_folder() -> Path:
    """Return a folder where ``fhir-kit-client`` is installed, installing it once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run fhir-kit-client")
    folder = Path(os.environ.get("GATEWAY_NPM_CACHE", Path(tempfile.gettempdir()) / "fhir-gateway-interop-node"))
    marker = folder / "node_modules" / "fhir-kit-client" / "package.json"
    if not marker.exists() or json.loads(marker.read_text())["version"] != PACKAGE.split("@")[1]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "package.json").write_text('{"private": true}\n', encoding="utf-8")
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", PACKAGE], cwd=folder,
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"npm could not install {PACKAGE}: {done.stderr.strip()[-300:]}")
    return folder


def test_fhir_kit_client_scenario(server: Server, tag: str, node_folder: Path) -> None:
    script = node_folder / SCENARIO.name  # beside node_modules, so that the import resolves
    shutil.copyfile(SCENARIO, script)
    cases = searches(tag)
    env = {**os.environ, "BASE": server.base, "TOKEN": server.token, "TAG": tag,
           "SEEDS": json.dumps(seeds(tag)), "SEARCHES": json.dumps([[t, p] for t, p, _, _ in cases])}  # fmt: skip
    done = subprocess.run(
        ["node", str(script)], cwd=node_folder, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, Any] = json.loads(done.stdout)
    assert seen["crud"] == {"created": "1", "updated": "2", "gender": "female", "stale": 412, "gone": 410}
    assert seen["lostUpdate"] == {"birthDate": "1990-04-02", "versionId": "4"}
    for (rtype, params, expected, ordered), found in zip(cases, seen["searches"], strict=True):
        assert (found if ordered else sorted(found)) == (expected if ordered else sorted(expected)), (rtype, params)
    assert seen["paging"] == {
        "all": [f"ap1-{tag}", f"ap3-{tag}"], "total": 2, "counted": 0,
        "included": [f"include:pa-{tag}", f"match:ap1-{tag}"], "posted": [f"ap3-{tag}", f"ap1-{tag}"],
    }  # fmt: skip
    assert seen["conditional"] == {"same": True, "gender": "other", "left": 0}
    assert seen["patchAndHistory"] == {"status": "noshow", "versionId": "2", "type": "history",
                                       "methods": ["PUT", "POST"], "typed": "history"}  # fmt: skip
    assert seen["bundles"] == {"subject": f"Patient/pa-{tag}", "outcome": "OperationOutcome", "batch": ["200", "404"]}
