"""``codeyard-worker``: the command every worker container runs (also ``codeyard worker``).

A separate, argparse-based entry point because it is on the critical path of every worker's
start: the ``codeyard`` typer app imports typer, rich and every sub-command's wiring, which
cost 0.3-0.8 s per container on these machines (bench/spawn.py); this module imports only
what a worker runs. ``codeyard worker ARGS`` forwards its arguments here, so both spellings
take the same options and behave the same.

Exit codes: 0 after a stop message, SIGTERM or SIGINT; 2 for a usage error, invalid
settings or a worker that cannot start (unknown provider, missing API key variable...);
3 when Redis stayed unreachable longer than ``worker_redis_outage_s``
(``CODEYARD_WORKER_REDIS_OUTAGE_S``, :mod:`codeyard.app.worker_outage`), after one
``worker: giving up, redis unreachable`` error log line. Anything else escaping is a bug
(exit 1, with its traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from codeyard.app.observability.logging import configure_logging
from codeyard.app.settings import InvalidSettings, Settings
from codeyard.app.worker_agent import AgentOptions
from codeyard.app.worker_main import WorkerConfig, run_worker
from codeyard.app.worker_outage import RedisOutageTooLong
from codeyard.domain.errors import InvalidInput
from codeyard.domain.secrets import secret_env

PROG = "codeyard-worker"
#: Exit code of a worker that gave up waiting for Redis (module doc).
EXIT_REDIS_OUTAGE = 3

log = structlog.get_logger(__name__)


def _positive(text: str) -> float:
    value = float(text)
    if value < 0.01:
        msg = f"must be >= 0.01, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve a worker's input stream with an agent CLI (runs inside the worker "
            "container). Prompts are read from worker:<ID>:input, events written to "
            "worker:<ID>:output (Redis, from the CODEYARD_* settings); ends on a "
            '{"type": "stop"} message, SIGTERM or SIGINT. With --standby the worker id, '
            "instructions, env and allowed commands come from the assignment published on "
            "worker:standby:<SLOT>; a signal before it arrives exits quietly (code 0)."
        ),
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--worker-id", help="Serve as this worker at once.")
    mode.add_argument(
        "--standby",
        metavar="SLOT",
        help="Wait for an assignment on worker:standby:SLOT, then serve as its worker.",
    )
    parser.add_argument("--provider", default="claude", help="Agent provider (claude, codex...).")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(),
        help="Where the agent works (default: current directory).",
    )
    parser.add_argument(
        "--home",
        type=Path,
        help="The agent CLI's private HOME (default: ~/.codeyard/workers/ID, "
        "or ~/.codeyard/workers/standby-SLOT).",
    )
    parser.add_argument(
        "--instructions-file",
        type=Path,
        help="Instructions copied to CLAUDE.md / GEMINI.md / AGENTS.md (--worker-id only; "
        "a standby worker gets them from its assignment).",
    )
    parser.add_argument(
        "--heartbeat-s", type=_positive, default=10.0, help="Heartbeat interval (seconds)."
    )
    parser.add_argument("--agent-binary", help="The agent CLI executable (default: on PATH).")
    parser.add_argument("--base-url", help="The model API's base URL.")
    parser.add_argument(
        "--api-key-env", help="NAME of the environment variable holding the model API key."
    )
    return parser


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> WorkerConfig:
    """The :class:`WorkerConfig` of parsed arguments; usage errors exit 2 via ``parser``."""
    if args.standby is not None and args.instructions_file is not None:
        parser.error(
            "--instructions-file: a standby worker gets its instructions from its assignment"
        )
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env: {args.api_key_env} is not set")
    instructions = None
    if args.instructions_file is not None:
        instructions = args.instructions_file.read_text(encoding="utf-8")
    default_home = args.worker_id if args.worker_id is not None else f"standby-{args.standby}"
    home: Path = args.home or Path.home() / ".codeyard" / "workers" / default_home
    return WorkerConfig(
        worker_id=args.worker_id,
        standby_slot=args.standby,
        provider=args.provider,
        workdir=args.workdir.resolve(),
        home=home.resolve(),
        instructions=instructions,
        heartbeat_s=args.heartbeat_s,
        agent=AgentOptions(binary=args.agent_binary, base_url=args.base_url, api_key=api_key),
        secret_env=secret_env(os.environ),
    )


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run a worker; returns the exit code (see the module doc)."""
    parser = build_parser(prog)
    config = config_from_args(parser.parse_args(argv), parser)
    try:
        settings = Settings()
    except InvalidSettings as exc:
        print(f"{prog}: invalid configuration: {exc.message}", file=sys.stderr)
        for item in exc.fields.get("errors", []):
            print(f"  {item['env']}: {item['msg']}", file=sys.stderr)
        if "env" in exc.fields and not exc.fields.get("errors"):
            print(f"  set {exc.fields['env']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json, redact=config.secret_env.values())
    try:
        anyio.run(run_worker, settings, config)
    except InvalidInput as exc:
        print(f"{prog}: cannot start the worker: {exc}", file=sys.stderr)
        return 2
    except RedisOutageTooLong as exc:
        log.error(  # noqa: TRY400 - the cause is a connection error: no traceback wanted
            "worker: giving up, redis unreachable",
            outage_s=exc.fields.get("outage_s"),
            op=exc.fields.get("op"),
            cause=str(exc.__cause__ or exc),
            exit_code=EXIT_REDIS_OUTAGE,
        )
        return EXIT_REDIS_OUTAGE
    return 0


def entrypoint() -> None:
    """The ``codeyard-worker`` console script."""
    sys.exit(main())
