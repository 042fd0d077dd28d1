"""``greenpipe farm ...``: the loopback device farm (Prefect server, S3 server, simulated cpu hosts).

    greenpipe farm up [--host cpu-host-1 --host cpu-host-2] [--pool cpu-hosts]   # returns when ready
    greenpipe farm status                                            # servers, queues, workers
    greenpipe farm down                                              # stops all of it

State (logs, SQLite database, S3 folder and keys) lives in ``GREENPIPE_FARM_DIR`` (default
``.greenpipe/farm``); a deploy stage whose device has a remote ``host`` finds the running farm there.
Everything listens on 127.0.0.1. A typer sub-app; greenpipe/cli.py mounts it as ``farm``.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console

from greenpipe.errors import GreenpipeError

app = typer.Typer(no_args_is_help=True, help="The loopback device farm: Prefect + S3 + simulated cpu hosts.")
console = Console(soft_wrap=True, markup=False, highlight=False)


def _fail(exc: GreenpipeError) -> None:
    Console(stderr=True, soft_wrap=True, markup=False, highlight=False).print(
        f"error: {exc}", style="bold red"
    )
    raise typer.Exit(2)


def _stack():
    from greenpipe.farm.client import farm_dir
    from greenpipe.farm.stack import LocalStack

    return LocalStack(farm_dir())


@app.command()
def up(
    host: list[str] = typer.Option(
        None, "--host", help="simulated host (one worker each); default cpu-host-1, cpu-host-2"
    ),
    pool: str = typer.Option("cpu-hosts", help="Prefect work pool (type process) of the simulated hosts"),
) -> None:
    """Start the Prefect server, the S3 server and one worker per host, in the background."""
    from greenpipe.farm.stack import DEFAULT_HOSTS

    stack = _stack()
    before = stack.processes()
    try:
        running = stack.up(hosts=tuple(host or DEFAULT_HOSTS), pool=pool)
    except GreenpipeError as exc:
        _fail(exc)
    if before:
        dead = [name for name, alive in before.items() if not alive]
        left = [name for name, alive in before.items() if alive]
        how = f"had failed (dead: {', '.join(dead)})" if dead else "never came up"
        console.print(f"an earlier farm in {stack.state_dir} {how}; stopped what was left of it "
                      f"({', '.join(left) or 'nothing'}) and started clean")  # fmt: skip
    info = running.info
    console.print(f"farm up in {info['startup_s']} s (state in {_stack().state_dir})")
    console.print(f"  Prefect API  {running.api_url}  (basic auth; string and host keys in "
                  f"{_stack().state_dir / 'secrets.json'}, mode 600)")
    console.print(f"  S3           {running.endpoint.url}  bucket {running.bucket}")
    console.print(f"  pool {info['pool']}: " + ", ".join(f"{h} (queue {h})" for h in info["hosts"]))
    console.print(
        "A device with host/pool/queue set to one of these runs there (params.yaml, deploy.devices)."
    )


@app.command()
def down() -> None:
    """Stop the workers and both servers started by `greenpipe farm up`."""
    stack = _stack()
    console.print("farm stopped" if stack.down() else f"no farm was running from {stack.state_dir}")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print the status as JSON")) -> None:
    """Whether the farm runs; its servers, queues (seconds since a worker last polled) and workers."""
    try:
        st = _stack().status()
    except GreenpipeError as exc:
        _fail(exc)
    if as_json:
        console.print(json.dumps(st, indent=2))
        return
    dead = [name for name, alive in st["processes"].items() if not alive]
    if not st["up"]:
        left = [name for name, alive in st["processes"].items() if alive]
        console.print(f"farm is down (state dir {st['state_dir']}); start it with `greenpipe farm up`")
        if left:
            console.print(f"  still running: {', '.join(left)}; dead: {', '.join(dead)}. "
                          "`greenpipe farm down` stops what is left; `greenpipe farm up` also starts clean.")  # fmt: skip
        raise typer.Exit(1)
    console.print(f"farm is up (state dir {st['state_dir']})")
    console.print(f"  Prefect API  {st['prefect']}")
    console.print(f"  S3           {st['s3']}  bucket {st['bucket']}")
    console.print(f"  pool {st['pool']}")
    for name, q in st["queues"].items():
        alive = st["workers_alive"].get(name)
        worker = "worker alive" if alive else ("worker dead" if alive is False else "no local worker")
        polled = "never polled" if q["last_polled_s"] is None else f"polled {q['last_polled_s']:.0f} s ago"
        console.print(f"    queue {name:<14} {polled:<20} {worker}")
    if dead:
        console.print(f"  dead: {', '.join(dead)} (see the logs in {st['state_dir']}); `greenpipe farm up` "
                      "stops the rest and starts the farm clean")  # fmt: skip
        raise typer.Exit(1)
