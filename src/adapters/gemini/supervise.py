"""Kill the tool processes Gemini CLI leaves behind.

Gemini 0.61 starts every shell tool with node's ``detached: true``: the tool leads a new
session and process group of its own, so signalling (or killing) the CLI's process group
does not reach it, and the CLI does not stop its tools when it gets SIGINT/SIGTERM in
headless mode. Measured: a ``sleep 30`` tool outlived a cancelled run by its full 30 s.

The tools do inherit the CLI's environment. So the CLI runs under a small POSIX ``sh``
supervisor (any image with node has ``/bin/sh``) that exports a per-run marker variable,
waits for the CLI (trapping the interrupt signals, which reach it too as a member of the
group, so that it survives them), then kills every process whose environment carries the
marker: one ``grep`` over ``/proc/*/environ``. Its exit status is the CLI's.

Limit: a SIGKILL of the group (the last escalation step, for a CLI that ignores SIGINT and
SIGTERM) kills the supervisor too, and no sweep happens. Gemini exits on SIGINT when
``GEMINI_CLI_NO_RELAUNCH=true``, so the first step normally suffices.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

#: The environment variable carrying the per-run marker.
MARKER_ENV = "CODEYARD_GEMINI_RUN"

# "$@" is the CLI's argv. The marker is unset before the sweep so that grep itself does not
# carry it; $$ (this shell, which was started with it) is skipped.
SUPERVISOR_SCRIPT = f"""\
trap : INT TERM HUP
"$@"
status=$?
[ -n "${MARKER_ENV}" ] || exit "$status"
marker="{MARKER_ENV}=${MARKER_ENV}"
unset {MARKER_ENV}
for round in 1 2; do
  for environ in $(grep -lsF "$marker" /proc/[0-9]*/environ); do
    pid=${{environ#/proc/}}
    pid=${{pid%/environ}}
    [ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null
  done
done
exit "$status"
"""


def new_marker() -> str:
    """A marker value unique to one run."""
    return uuid.uuid4().hex


def supervised(argv: Sequence[str], *, shell: str = "/bin/sh") -> tuple[str, ...]:
    """``argv`` run under the supervisor (``MARKER_ENV`` must be in the environment)."""
    return (shell, "-c", SUPERVISOR_SCRIPT, "codeyard-gemini", *argv)
