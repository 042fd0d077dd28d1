"""``greenpipe nightly``: the scheduled run, once now or served on its cron.

    greenpipe nightly run              # run flows/nightly.py now; prints what ran, what was cached, durations
    greenpipe nightly serve            # serve it here at nightly.cron in nightly.timezone (params.yaml)

Run from the repository root: both start flows/nightly.py as its own process (``python -m
flows.nightly``). Without PREFECT_API_URL, both use the loopback farm's Prefect server when ``greenpipe
farm up`` runs; otherwise ``run`` starts a temporary one on 127.0.0.1 for the run. Either way the server
requires the install's one basic-auth string (``secrets.json`` in the farm's state dir, 0600, made on
first use), which the flow's process gets in its environment. ``serve`` needs a server that stays up
(the farm's, or ``PREFECT_API_URL``) so that its schedule has somewhere to live.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from greenpipe.errors import GreenpipeError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="The nightly run: what changed, in parallel, gated."
)
console = Console()
err = Console(stderr=True)

STYLE = {"ran": "green", "restored": "cyan", "up to date": "dim", "failed": "bold red", "skipped": "yellow"}


def _fail(exc: GreenpipeError) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@contextmanager
def _prefect_env(tmp: Path | None) -> Iterator[dict[str, str] | None]:
    """The flow process's environment: None (inherit) with PREFECT_API_URL set or in the Prefect profile;
    else the running loopback farm's server, else (given ``tmp``) a temporary server started for this
    run, each with the install's auth string. Prints which."""
    from greenpipe.farm.auth import API_AUTH_ENV, FarmSecrets, api_auth_from_env
    from greenpipe.farm.client import farm_dir
    from greenpipe.farm.prefect_server import LocalPrefect
    from greenpipe.farm.stack import LocalStack

    from prefect.settings import PREFECT_API_URL

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        auth = "with" if api_auth_from_env() else "without"
        console.print(f"Prefect server: PREFECT_API_URL ({auth} an auth string, PREFECT_API_AUTH_STRING)")
        yield None
        return
    running = LocalStack(farm_dir()).running()
    if running is not None or tmp is None:
        if running is None:
            raise GreenpipeError(
                "No Prefect server to serve the schedule on: start the loopback farm (`greenpipe farm up`) or "
                "set PREFECT_API_URL (and PREFECT_API_AUTH_STRING) to a server that stays up."
            )
        console.print(f"Prefect server: the loopback farm's, {running.api_url} (basic auth)")
        yield {**os.environ, "PREFECT_API_URL": running.api_url, API_AUTH_ENV: running.secrets.api_auth}
        return
    secrets = FarmSecrets.load_or_create(farm_dir())
    server = LocalPrefect(tmp / "prefect", api_auth=secrets.api_auth)
    url = server.start()
    console.print(f"Prefect server: temporary, {url} (basic auth: the install's string in "
                  f"{farm_dir() / 'secrets.json'})")  # fmt: skip
    try:
        yield {**os.environ, "PREFECT_API_URL": url, API_AUTH_ENV: secrets.api_auth}
    finally:
        server.stop()


def _command(*args: str) -> list[str]:
    """``python -m flows.nightly ARGS``, the flow run as its own process (the library never imports flows/)."""
    from greenpipe.cli_flow import flow_command

    return flow_command("nightly", *args, hint=" (pass --root for another checkout)")


def stage_table(record: dict) -> Table:
    """Rich table: each stage, ran / restored from DVC's run-cache / up to date, its seconds."""
    t = Table(title="nightly stages", title_justify="left")
    for col, kw in (
        ("stage", {}),
        ("status", {}),
        ("s", {"justify": "right"}),
        ("attempts", {"justify": "right"}),
        ("detail", {"overflow": "fold", "max_width": 60}),
    ):
        t.add_column(col, **kw)
    for s in record.get("stages", []):
        detail = s.get("detail", "")
        detail = detail.strip().splitlines()[0] if detail.strip() else ""
        style = STYLE.get(s["status"], "")
        t.add_row(s["stage"], f"[{style}]{s['status']}[/]", f"{s['seconds']:.1f}", str(s["attempts"]), detail)
    return t


def regression_table(record: dict) -> Table | None:
    regs = record.get("regressions") or []
    if not regs:
        return None
    base = (record.get("baseline") or {}).get("label", "?")
    t = Table(title=f"regressions vs {base}", title_justify="left")
    for col in ("variant-device", "metric", "before", "after", "worse by", "limit"):
        t.add_column(col)
    for r in regs:
        t.add_row(
            r["row"],
            r["metric"],
            f"{r['before']:.4g}",
            f"{r['after']:.4g}",
            f"{r['worse_by']:.3g} {r['unit']}",
            f"{r['limit']:g} {r['unit']}",
        )
    return t


@app.command("run")
def run(
    root: Path = typer.Option(Path("."), help="the greenpipe checkout (git + DVC) to run in"),
    params: str = typer.Option("params.yaml", help="params file, relative to ROOT (section `nightly`)"),
) -> None:
    """Run the nightly flow once, now: only changed stages, branches concurrently, push, commit, gate."""
    from greenpipe.cli_flow import run_flow
    from greenpipe.io import read_json
    from greenpipe.params import load_params

    with tempfile.TemporaryDirectory(prefix="greenpipe-nightly-") as tmp:
        ending = Path(tmp) / "ending.json"
        try:
            load_params(root / params)  # a bad value fails here, naming the key, before Prefect starts
            command = _command("--root", str(root), "--params", params, "--ending", str(ending))
            with _prefect_env(Path(tmp)) as env:
                status = run_flow(command, env)
        except GreenpipeError as exc:
            _fail(exc)
        outcome = read_json(ending) if ending.is_file() else None
    if outcome is None:  # the process ended before the flow did; what it printed says why
        err.print(f"[bold red]the nightly flow ended without a result (exit status {status})[/]")
        raise typer.Exit(1)
    record = outcome["record"]
    if isinstance(record, dict):
        console.print(stage_table(record))
        regs = regression_table(record)
        if regs is not None:
            console.print(regs)
        ran = [s["stage"] for s in record["stages"] if s["status"] == "ran"]
        console.print(
            f"{len(ran)} stage command(s) ran: {', '.join(ran) or 'none'}; "
            f"stages took {record.get('stages_s', 0):.1f} s"
        )
        if record.get("results_commit"):
            console.print(f"results: commit {record['results_commit'][:10]} on the results branch")
    if not outcome["completed"]:
        err.print(f"[bold red]{outcome['message']}[/]")
        if outcome["error"]:
            err.print(outcome["error"])
        raise typer.Exit(1)


@app.command("serve")
def serve(
    root: Path = typer.Option(Path("."), help="the greenpipe checkout (git + DVC) to run in"),
    params: str = typer.Option("params.yaml", help="params file, relative to ROOT (section `nightly`)"),
    name: str = typer.Option("nightly", help="deployment name shown in the Prefect UI"),
) -> None:
    """Serve the nightly flow from this process on nightly.cron in nightly.timezone (Ctrl-C stops it)."""
    from greenpipe.cli_flow import run_flow

    try:
        from greenpipe.params import load_params

        p = load_params(root / params).nightly
        from prefect.schedules import Cron

        Cron(p.cron, timezone=p.timezone)  # Prefect's own check, before the flow's process starts
        command = _command("--serve", name, "--root", str(root.resolve()), "--params", params)
    except GreenpipeError as exc:
        _fail(exc)
    except ValueError as exc:  # Prefect's own cron / timezone check
        _fail(GreenpipeError(f"{root / params}: nightly.cron / nightly.timezone rejected by Prefect: {exc}"))
    console.print(f"serving greenpipe-nightly/{name}: cron '{p.cron}' ({p.timezone}) in {root.resolve()}")
    try:
        with _prefect_env(None) as env:
            status = run_flow(command, env)
    except GreenpipeError as exc:
        _fail(exc)
    if status:
        raise typer.Exit(status)
