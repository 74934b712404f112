"""Write docs/platform-schema.json: the JSON Schema of every normalized record, as GET /platform/v1/schema serves it.

Run from the repository root: ``python tools/platform_schema.py`` (``--check`` exits 1 when the file is stale).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mappers.registry import record_routes

OUT = Path(__file__).resolve().parents[1] / "docs" / "platform-schema.json"


def render() -> str:
    """Return the schema document, routes and record types in a stable order."""
    document = {
        "description": "JSON Schema of every record the platform API serves, by record type, with its route.",
        "records": {
            record_type: {"route": f"/platform/v1/{route}", "schema": model.model_json_schema()}
            for route, (record_type, model) in sorted(record_routes().items(), key=lambda item: item[1][0])
        },
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
