"""A self-hosted environment's worker: the SDK's own `EnvironmentWorker`, pointed at sessiond.

Sessions on a `self_hosted` environment run their tools (bash, read, write, edit, glob,
grep) here, on this machine, in `--workdir`, not on the sessiond host. One command:

    SESSIOND_API_KEY=<key> python examples/self_hosted_worker.py --workdir ./work

With only an API key it creates a self-hosted environment and an environment key for it
(printing both), then serves it until Ctrl-C. Give `--environment-id` and
`--environment-key` (or ENVIRONMENT_ID / ENVIRONMENT_KEY) to serve an existing one: the
worker then needs no API key at all. Several workers may serve one environment; a worker
that dies loses its items after the lease (SESSIOND_WORK_LEASE_TTL_S on the server), and
another takes them over.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import anthropic
import httpx


def _environment(base_url: str, api_key: str) -> tuple[str, str]:
    """A new self-hosted environment and a key for it (the key API is sessiond's own)."""
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key)
    environment = client.beta.environments.create(
        name="self-hosted", config={"type": "self_hosted"}
    )
    made = httpx.post(
        f"{base_url}/v1/environments/{environment.id}/keys",
        headers={"x-api-key": api_key},
        json={"name": "example worker"},
        timeout=30,
    )
    made.raise_for_status()
    return environment.id, str(made.json()["secret"])


async def serve(base_url: str, environment_id: str, environment_key: str, workdir: Path) -> None:
    """Poll the environment and serve its sessions until cancelled."""
    workdir.mkdir(parents=True, exist_ok=True)
    # The worker authenticates with the environment key, and with each work item's
    # sessions token for that item's session; the client's own key is never sent.
    client = anthropic.AsyncAnthropic(base_url=base_url, auth_token=environment_key)
    worker = client.beta.environments.work.worker(
        environment_id=environment_id,
        environment_key=environment_key,
        workdir=str(workdir.resolve()),
        memory_sync_interval=None,  # sessiond has no memory stores on sessions yet
    )
    await worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SESSIOND_URL", "http://127.0.0.1:8420"))
    parser.add_argument("--environment-id", default=os.environ.get("ENVIRONMENT_ID"))
    parser.add_argument("--environment-key", default=os.environ.get("ENVIRONMENT_KEY"))
    parser.add_argument("--workdir", type=Path, default=Path("worker-files"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    environment_id, key = args.environment_id, args.environment_key
    if not (environment_id and key):
        environment_id, key = _environment(args.url, os.environ["SESSIOND_API_KEY"])
        print(f"environment {environment_id}\nenvironment key (shown once): {key}", flush=True)
    print(f"serving {environment_id} in {args.workdir.resolve()}", flush=True)
    try:
        asyncio.run(serve(args.url, environment_id, key, args.workdir))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
