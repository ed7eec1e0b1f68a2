"""The `rlhf` command line. Each pipeline stage is a subcommand that reads `params.yaml` (or
`--params FILE`) and runs through Prefect; heavy libraries load only when a command runs, so
`rlhf --help` answers at once."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from rlhf.config import SECTIONS

app = typer.Typer(help="The RLHF pipeline: data -> SFT -> reward model -> PPO / DPO -> evaluation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (YAML)")]


def _setup() -> None:
    from tasks.env import configure

    configure()


DEBUG_ENV = "RLHF_DEBUG"  # set by `rlhf --debug`; stage processes started by DVC inherit it


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors written for the user")] = False) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


class _UsersError(logging.Filter):
    """Keeps an error written for the user (`rlhf.errors.UserError`: bad params or data, a missing
    input, a diverged run) off the console while Prefect reports it, with its traceback, in four
    records: the command prints it once. The run's log on the Prefect server keeps every record."""

    def __init__(self) -> None:
        from rlhf.errors import UserError

        super().__init__()
        self.kind = UserError
        self.marks = []  # "<class name>:" of UserError and every subclass, as Prefect's messages quote it
        todo = [UserError]
        while todo:
            kind = todo.pop()
            self.marks.append(f"{kind.__name__}:")
            todo.extend(kind.__subclasses__())

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        return not isinstance(exc, self.kind) and not any(mark in message for mark in self.marks)


def _run_flow(run: Callable[[], Any], what: str, name: str) -> None:
    """`run()` a flow for its final state; when it failed, print one `error:` line and exit 1
    (with `--debug`, Prefect's records of a user's error, tracebacks included, stay on the console).
    A Prefect server that is away at the start is replaced by a temporary local one; one that goes
    away mid-run fails nothing whose flow code (`name`) ran to its end (`flows.prefect_api`)."""
    from flows.prefect_api import finished, local_if_unreachable, server_gone
    from rlhf.errors import UserError

    def warn(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    quiet = _UsersError()
    console = [] if os.environ.get(DEBUG_ENV) else logging.getLogger().handlers  # Prefect's console handler
    for handler in console:
        handler.addFilter(quiet)
    try:
        with local_if_unreachable(warn) as url:
            state = run()
    except Exception as err:  # noqa: BLE001 - the engine raises when it cannot reach its server
        if not server_gone(err):
            raise
        if finished(name):
            warn(f"{what} completed and wrote its outputs, but the Prefect server at {url} went away "
                 f"({err}): the run's final state is not recorded there")
            return
        typer.echo(f"error: {what} stopped: the Prefect server at {url} went away ({err})", err=True)
        raise typer.Exit(1)
    finally:
        for handler in console:
            handler.removeFilter(quiet)
    if not state.is_completed():
        err = state.result(raise_on_failure=False)
        reason = str(err) if isinstance(err, UserError) else f"{what} failed: {state.message}"
        typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(1)


def _run_stage(stage: str, params: Path) -> None:
    _setup()
    from rlhf.config import ConfigError, load_config

    try:
        load_config(stage, params)  # report a bad params file before Prefect starts
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    from flows.pipeline import run_stage

    _run_flow(lambda: run_stage(stage, str(params)), f"stage '{stage}'", stage)


def _stage_command(stage: str):
    def command(params: ParamsOpt = Path("params.yaml")) -> None:
        _run_stage(stage, params)

    command.__doc__ = f"Run the '{stage}' stage (section '{stage}' of the params file)."
    return command


for _stage in (s for s in SECTIONS if s != "validate"):  # `validate` has its own command, below
    app.command(name=_stage)(_stage_command(_stage))


@app.command()
def pipeline(
    params: ParamsOpt = Path("params.yaml"),
    no_dvc: Annotated[bool, typer.Option("--no-dvc", help="run tasks in-process, without DVC caching")] = False,
    force: Annotated[bool, typer.Option(help="rerun stages even when DVC says they are up to date")] = False,
) -> None:
    """Run the whole pipeline (the Prefect flow `rlhf`) in the order declared in dvc.yaml."""
    _setup()
    from rlhf.config import ConfigError, load_all

    try:
        load_all(params)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    if not no_dvc and params != Path("params.yaml"):
        typer.echo("error: DVC reads params.yaml; use --no-dvc with another params file", err=True)
        raise typer.Exit(2)
    from flows.pipeline import pipeline as flow

    _run_flow(lambda: flow(str(params), use_dvc=not no_dvc, force=force, return_state=True), "pipeline", "pipeline")


@app.command()
def validate(
    path: Annotated[Optional[Path], typer.Argument(help="a file: JSON Lines (.jsonl, .jsonl.gz), JSON array, CSV or Parquet")] = None,
    kind: Annotated[Optional[str], typer.Option(help="sft | preference | prompts (with PATH)")] = None,
    max_chars: Annotated[Optional[int], typer.Option(min=1, help="longest text allowed, in characters")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Without PATH: run the 'validate' stage on every dataset of the pipeline. With PATH and
    --kind: validate one file; names the file, row and field of every problem."""
    if path is None:
        _run_stage("validate", params)
        return
    from rlhf.validation.validate import validate_file

    if kind not in ("sft", "preference", "prompts"):
        typer.echo(f"error: --kind must be one of sft, preference, prompts (got {kind!r})", err=True)
        raise typer.Exit(2)
    kwargs = {} if max_chars is None else {"max_chars": max_chars}
    report = validate_file(path, kind, **kwargs)
    typer.echo(report.summary())
    raise typer.Exit(0 if report.ok else 1)


def _unescape(text: str) -> str:
    """Let a typed two-character '\\n' stand for a newline in dialogues given on the command line."""
    return text.replace("\\n", "\n")


@app.command()
def score(
    texts: Annotated[list[str], typer.Argument(help="dialogues: '\\n\\nHuman: ...\\n\\nAssistant: ...'")],
    model: Annotated[Path, typer.Option(help="reward model directory")] = Path("artifacts/reward/model"),
) -> None:
    """Score dialogues with a trained reward model (normalised rewards)."""
    _setup()
    from rlhf.reward import RewardModel

    rm = RewardModel.from_pretrained(model)
    texts = [_unescape(t) for t in texts]
    for text, value in zip(texts, rm.score(texts)):
        typer.echo(f"{value:+.4f}\t{text.strip()[:80]!r}")


@app.command()
def compare(
    text_a: Annotated[str, typer.Argument(help="first dialogue")],
    text_b: Annotated[str, typer.Argument(help="second dialogue")],
    model: Annotated[Path, typer.Option(help="reward model directory")] = Path("artifacts/reward/model"),
) -> None:
    """Which of two dialogues the reward model prefers, with its confidence."""
    _setup()
    from rlhf.reward import RewardModel

    rm = RewardModel.from_pretrained(model)
    typer.echo(json.dumps(rm.compare(_unescape(text_a), _unescape(text_b)), indent=2))


@app.command()
def chat(
    model_dir: Annotated[Path, typer.Argument(help="a policy directory: artifacts/{sft,ppo,dpo}/model or any causal LM")],
    temperature: Annotated[float, typer.Option(min=0.0, help="sampling temperature T (0 = greedy)")] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="nucleus sampling mass (1 = off)")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="longest reply, in tokens")] = 128,
    system: Annotated[Optional[str], typer.Option(help="system prompt, kept when old turns are dropped")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed the sampling, for a reproducible conversation")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="run Python code shipped in the model directory (only code you trust)")] = False,
) -> None:
    """Chat with a trained policy in the terminal (/reset forgets, /exit or Ctrl-D ends, Ctrl-C stops a reply)."""
    import torch

    from rlhf.chat_session import ChatError, ChatSession, load_chat_model, run_chat

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover
        pass
    cuda = torch.cuda.is_available()
    try:
        model, tokenizer = load_chat_model(model_dir, "cuda" if cuda else "cpu", trust_remote_code)
        session = ChatSession(model, tokenizer, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, system=system, seed=seed, autocast=cuda)
    except ChatError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    run_chat(session, input, write)


@app.command(name="import-model")
def import_model(
    source: Annotated[str, typer.Argument(help="a .gguf file, a model directory, or pkg:NAME (an installed package's folder)")],
    out_dir: Annotated[Path, typer.Argument(help="the Hugging Face directory to write (replaced atomically)")],
    gguf_file: Annotated[Optional[str], typer.Option(help="the GGUF file to read, when the folder holds several")] = None,
) -> None:
    """Import a shipped model (GGUF -> safetensors, or a Hugging Face directory copied) for the stages."""
    _setup()
    from rlhf.model_import import ModelImportError
    from rlhf.model_import import import_model as run_import

    try:
        info = run_import(source, out_dir, gguf_file)
    except ModelImportError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{out_dir}: {info['architecture']} from {info['source_file']} ({info['kind']}), "
               f"{info['bytes'] / 1e6:.0f} MB in {info['seconds']:.1f} s")


@app.command(name="plots-template")
def plots_template() -> None:
    """Make `dvc plots show` render offline: vega from the npm registry, inlined into a local template."""
    from flows.plots_offline import write_template
    from rlhf.errors import UserError

    try:
        path = write_template(Path.cwd())
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: vega inlined; dvc plots show now renders without network")


@app.command()
def summary() -> None:
    """Print what the pipeline produced and how to open the MLflow UI on it."""
    from flows.report import print_summary

    _setup()
    print_summary()


tracking = typer.Typer(help="MLflow records that wait in the outbox while the tracking server is away.",
                       no_args_is_help=True)
app.add_typer(tracking, name="tracking")


@tracking.command(name="status")
def tracking_status() -> None:
    """List the stage records waiting in .state/tracking-outbox."""
    _setup()
    from tasks.outbox import outbox_dir, pending

    queued = pending()
    typer.echo(f"{len(queued)} record(s) waiting in {outbox_dir()}")
    for path in queued:
        typer.echo(f"  {path.stem}")


@tracking.command(name="sync")
def tracking_sync() -> None:
    """Log every waiting record to MLflow (MLFLOW_TRACKING_URI), oldest first; exit 1 if the
    server is still away (the records stay queued)."""
    _setup()
    import mlflow

    from tasks.outbox import pending, replay
    from tasks.tracking import log_record

    logged, error = replay(log_record)
    typer.echo(f"logged {len(logged)} record(s) to {mlflow.get_tracking_uri()}")
    if error is not None:
        typer.echo(f"error: MLflow is unreachable ({error}); {len(pending())} record(s) still queued", err=True)
        raise typer.Exit(1)


from flows.stack_cli import stack  # noqa: E402  (rlhf stack up | down | status | worker)

app.add_typer(stack, name="stack")


@app.command()
def serve() -> None:
    """Serve the flow `rlhf` as the deployment `rlhf/full-pipeline` (needs a Prefect server)."""
    _setup()
    from flows.pipeline import pipeline as flow

    flow.serve(name="full-pipeline")


def exit_now(code: int | str | None) -> NoReturn:
    """End the process as `sys.exit(code)` would, less the interpreter's teardown: freeing the
    modules of torch, SQLAlchemy and Prefect takes 1-2 s per process and nothing a finished command
    needs. What an exit does for its work still runs first, in Python's own order: non-daemon threads
    are joined and threading's exit hooks drain Prefect's log and event queues (`threading._shutdown`,
    as the interpreter calls it), then the `atexit` handlers (logging flushes its handlers), then
    standard output and error are flushed. Every file a command writes is closed (and renamed) before
    it returns."""
    if code is not None and not isinstance(code, int):  # sys.exit("message"): print it, exit 1
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say to it
            pass
    os._exit(code or 0)


def main() -> None:  # pragma: no cover
    try:
        app()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)


if __name__ == "__main__":  # pragma: no cover  (python -m flows.cli, as the example script runs it)
    main()
