"""A Prefect server that is away never costs a stage its work.

Prefect 3 sends task-run states as events (a server that is away loses them, with a warning) and
proposes the flow run's own states through the API. So:
- a server that is unreachable when a command starts: the command warns and records its flow run
  in a temporary local server instead (`local_if_unreachable`), so the stage still runs;
- a server that goes away while the stage trains: the flow's code runs to its end (outputs,
  metrics and the MLflow record written), then Prefect fails to record the final state and raises a
  transport error; `finished` tells the command that the flow's own code completed, so it reports
  the stage as done and says what Prefect could not record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

# the names of flows (a stage, or "pipeline") whose code ran to its end in this process
_FINISHED: set[str] = set()


def mark_finished(name: str) -> None:
    _FINISHED.add(name)


def finished(name: str) -> bool:
    return name in _FINISHED


def api_url() -> str | None:
    """The Prefect server this process reports to (None: a temporary local one)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def reachable(url: str, timeout: float = 5.0) -> bool:
    """`<url>/health` answers 200: a Prefect API (`.../api`) or an MLflow server."""
    import httpx

    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def server_gone(err: BaseException) -> bool:
    """`err` says the Prefect server could not be reached (refused, timed out, dropped, or 5xx)."""
    import httpx

    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code >= 500
    return False


@contextmanager
def local_if_unreachable(warn: Callable[[str], None]) -> Iterator[str | None]:
    """Run the block against the configured Prefect server, or, when it does not answer, against a
    temporary local server (with a warning). Yields the URL in use (None: local)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url()
    if url is None or reachable(url):
        yield url
        return
    warn(f"the Prefect server at {url} does not answer: this run is recorded in a temporary local "
         f"Prefect server instead (its logs stay on this terminal)")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield None
