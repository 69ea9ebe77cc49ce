"""Importing the domain and the ports must not pull in any I/O library.

Checked in a fresh interpreter: the test process itself has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

IO_LIBRARIES = {
    "anyio",
    "asyncpg",
    "dependency_injector",
    "docker",
    "httpx",
    "httpx_sse",
    "redis",
    "requests",
    "structlog",
}


def test_domain_and_ports_import_no_io_library() -> None:
    code = (
        "import json, sys\n"
        "import codeyard.domain, codeyard.ports\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "codeyard" in loaded
    assert "pydantic" in loaded
    assert loaded.isdisjoint(IO_LIBRARIES), sorted(loaded & IO_LIBRARIES)
