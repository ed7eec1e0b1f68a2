"""`rlhf stack up | down | status | worker` (flows/stack.py does the work)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

stack = typer.Typer(help="The Prefect server, MLflow server and workers on this machine (.state/stack).",
                    no_args_is_help=True)


def _say(text: str) -> None:
    typer.echo(text)


@stack.command(name="up")
def stack_up(
    host: Annotated[str, typer.Option(help="address the servers bind to (127.0.0.1: this machine only)")] = "127.0.0.1",
    prefect_port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
    mlflow_port: Annotated[int, typer.Option(help="MLflow tracking server port")] = 5000,
    pool: Annotated[Optional[list[str]], typer.Option(help="start a worker for this pool only (repeatable; default: every pool)")] = None,
) -> None:
    """Start the Prefect and MLflow servers, register prefect.yaml's deployments, and start one worker
    per work pool running this clone (each only if not running already); prints the variables to export."""
    from flows.stack import up
    from rlhf.errors import UserError

    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: the servers will listen on {host}, reachable from other machines; they have no "
                   "authentication", err=True)
    try:
        urls = up(Path.cwd(), host, prefect_port, mlflow_port, _say, pool or None)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo("\n".join(f"export {k}={v}" for k, v in urls.items()))


@stack.command(name="down")
def stack_down() -> None:
    """Stop exactly what `rlhf stack up` and `rlhf stack worker` started in this clone."""
    from flows.stack import down

    typer.echo(f"{down(Path.cwd(), _say)} process(es) stopped")


@stack.command(name="status")
def stack_status() -> None:
    """Each component of this clone's stack: running and answering, or not; exit 1 if one is down."""
    from flows.stack import status

    rows = status(Path.cwd())
    for name, ok, detail in rows:
        typer.echo(f"{name:24s} {'up' if ok else 'DOWN':5s} {detail}")
    if not rows:
        typer.echo("nothing started here (rlhf stack up)")
    raise typer.Exit(0 if rows and all(ok for _, ok, _ in rows) else 1)


@stack.command(name="worker")
def stack_worker(pool: Annotated[str, typer.Argument(help="work pool, as named in prefect.yaml (rlhf-gpu, rlhf-cpu)")]) -> None:
    """Start one worker of POOL running this clone, against PREFECT_API_URL and MLFLOW_TRACKING_URI
    (or this clone's `rlhf stack up`)."""
    from flows.stack import stack_dir, start_worker
    from rlhf.errors import UserError

    urls = json.loads((stack_dir(Path.cwd()) / "urls.json").read_text()) if (stack_dir(Path.cwd()) / "urls.json").is_file() else {}
    api_url = os.environ.get("PREFECT_API_URL") or urls.get("PREFECT_API_URL")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or urls.get("MLFLOW_TRACKING_URI")
    if not api_url or not tracking_uri:
        typer.echo("error: set PREFECT_API_URL and MLFLOW_TRACKING_URI to the stack's servers", err=True)
        raise typer.Exit(2)
    try:
        start_worker(Path.cwd(), pool, api_url, tracking_uri, _say)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
