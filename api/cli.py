"""The `sessiond` console script: `serve [--no-engine]`, `worker`, `migrate`, `export`,
`import`, `keys create`, `eval run|rerun|replay|report`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

import anyio

from sessiond.api.config import Config
from sessiond.runtime.resources.workspaces import DEFAULT_WORKSPACE_ID, CreateApiKey, Workspaces
from sessiond.store.backends import open_store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessiond", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API server (and the engine)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8420)
    serve.add_argument(
        "--no-engine",
        action="store_true",
        help="serve the API only: workers (`sessiond worker`) run the sessions",
    )
    worker = sub.add_parser(
        "worker", help="run the engine only, beside API processes on one PostgreSQL database"
    )
    worker.add_argument(
        "--concurrency", type=int, default=None, help="sessions driven at once (default 256)"
    )
    sub.add_parser("migrate", help="apply the database's migrations and exit")
    export = sub.add_parser(
        "export", help="write the installation (or some sessions) as JSON lines"
    )
    export.add_argument("--out", default="-", help="a file (default: standard output)")
    export.add_argument(
        "--session", action="append", default=None, help="only this session (repeatable)"
    )
    load = sub.add_parser(
        "import", help="load an export (JSON lines) into this installation's database"
    )
    load.add_argument("file", help="the export, or - for standard input")
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--workspace", default=DEFAULT_WORKSPACE_ID)
    create.add_argument("--name", default=None)
    from sessiond.api.eval_cli import add_parser

    add_parser(sub)
    return parser


async def _create_key(config: Config, workspace_id: str, name: str | None) -> str:
    store = open_store(config.database_url)
    await store.open()
    try:
        workspaces = Workspaces(store)
        await workspaces.ensure_default()
        created = await workspaces.create_key(CreateApiKey(workspace_id=workspace_id, name=name))
    finally:
        await store.close()
    return created.secret


async def _migrate(url: str) -> None:
    store = open_store(url)
    await store.open()  # opening applies the migrations
    await store.close()
    print(f"sessiond: {url.split('@')[-1]} is migrated", flush=True)


async def _export(url: str, out: str, session_ids: list[str] | None) -> None:
    from sessiond.runtime.resources.transfer import export_installation

    store = open_store(url)
    await store.open()
    sink = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115

    def write(line: bytes) -> None:
        sink.write(line)

    try:
        lines = await export_installation(store, write, session_ids=session_ids)
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
        await store.close()
    print(f"sessiond: exported {lines} lines", file=sys.stderr, flush=True)


async def _import(url: str, path: str) -> None:
    from sessiond.runtime.resources.transfer import import_installation

    store = open_store(url)
    await store.open()
    source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        counts = await import_installation(store, source)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        await store.close()
    print(
        f"sessiond: imported {counts.records} records, {counts.versions} versions, "
        f"{counts.streams} sessions and runs, {counts.events} events",
        file=sys.stderr,
        flush=True,
    )


def _loop_options() -> dict[str, bool]:
    """uvloop when it is installed (it is a dependency where it builds: not on Windows).
    SESSIOND_UVLOOP=0 keeps the stdlib loop."""
    if os.environ.get("SESSIOND_UVLOOP", "1") == "0":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The SDKs' HTTP clients log every model request at INFO: a line per call, and the
    # sessions' logs already record each request.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.command == "eval":
        from sessiond.api.eval_cli import run_eval_command

        return run_eval_command(args)
    if args.command == "worker":
        # The engine alone: nothing of the HTTP layer is imported on this path. The
        # eval layer's model source serves the cassette re-runs this worker may drive.
        from sessiond.evals.cassette import CassetteModels
        from sessiond.runtime.settings import Settings
        from sessiond.runtime.worker import run_worker

        settings = Settings.from_env()
        if args.concurrency is not None:
            settings.drives = args.concurrency
        anyio.run(
            functools.partial(run_worker, settings, model_source=CassetteModels),
            backend_options=_loop_options(),
        )
        return 0
    config = Config.from_env()
    if args.command == "migrate":
        anyio.run(_migrate, config.database_url)
        return 0
    if args.command == "export":
        anyio.run(_export, config.database_url, args.out, args.session)
        return 0
    if args.command == "import":
        anyio.run(_import, config.database_url, args.file)
        return 0
    if args.command == "serve":
        from sessiond.api.serve import serve

        if args.no_engine:
            config.run_engine = False
        anyio.run(serve, config, args.host, args.port, backend_options=_loop_options())
        return 0
    if args.command == "keys":
        secret = anyio.run(_create_key, config, args.workspace, args.name)
        print(secret)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
