"""The loopback device farm: a Prefect server, an S3 server and one Prefect worker per simulated host.

    greenpipe farm up        # starts it in the background (state in .greenpipe/farm), returns when ready
    greenpipe farm status    # servers, pools, queues (last polled), workers
    greenpipe farm down      # stops everything it started

Everything listens on 127.0.0.1 only. ``farm up`` starts a supervisor process
(``python -m greenpipe.farm.stack <state_dir>``) in its own session; the supervisor makes (once per
install) the farm's secrets in ``state_dir/secrets.json`` (0600: the Prefect API's basic-auth string and
one result-signing key per host, :mod:`greenpipe.farm.auth`), starts
:class:`~greenpipe.farm.prefect_server.LocalPrefect` (SQLite, basic auth and CSRF protection on),
:class:`~greenpipe.farm.s3server.LocalS3` (``rclone serve s3``) for the controller and one more per
host, each with its own key, through which that host may write below ``hosts/<host>/`` only
(:class:`~greenpipe.farm.s3server.HostView`), creates the bucket, the ``process`` work
pool with a locked job template (:func:`locked_job_template`) and one queue per host, the
``device-run/<pool>`` deployment, and one ``prefect worker start --pool P --work-queue Q`` per host, then
waits for SIGTERM (``farm down``) and stops them all. Secrets reach the children through their
environment or a 0600 file, never their command line. Simulated hosts run the ``ort`` runtime on this CPU
and are named as what they are: ``cpu-host-1``, ``cpu-host-2`` (kind ``cpu``), never as a DPU card.

:func:`start_worker` is also what the tests use to put workers on their own servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from greenpipe.errors import GreenpipeError
from greenpipe.farm.auth import AGENT_KEY_ENV, API_AUTH_ENV, FarmSecrets, api_settings
from greenpipe.farm.deployment import JOB_COMMAND, ensure_deployment
from greenpipe.farm.prefect_server import LocalPrefect
from greenpipe.farm.s3server import KEYS_FILE, HostView, LocalS3, S3Endpoint, _pid_alive, _write_private_json
from greenpipe.store import ArtifactStore

STATE_FILE = "farm.json"
SUPERVISOR_LOG = "farm.log"
DEFAULT_POOL = "cpu-hosts"
DEFAULT_HOSTS = ("cpu-host-1", "cpu-host-2")
DEFAULT_BUCKET = "greenpipe"
PREFIX = "greenpipe"  # the store's prefix in the bucket (what ``store()`` and the hosts' views use)
# Worker poll interval (s): Prefect's default is 10; 1 keeps a job's pick-up delay about a second.
QUERY_S = 1.0
HEARTBEAT_S = 5.0  # worker heartbeat to the server (s); Prefect's default is 30
REPO_ROOT = Path(__file__).resolve().parents[2]
# What a worker (and so its jobs) inherits from the process that starts it; everything else it is given.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


@dataclass
class Worker:
    """A running ``prefect worker start`` for one host (its own session: killing it takes its jobs too)."""

    host: str
    pool: str
    queue: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the worker's process group (worker and any job), SIGKILL after ``timeout_s`` s."""
        _stop_group(self.proc.pid, timeout_s, self.proc)

    def kill(self) -> None:
        """SIGKILL the worker and its running job at once: what losing the host looks like."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _stop_group(pgid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not _pid_alive(pgid):
            break
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)  # whatever is left of the group (a job the worker did not stop)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, field 22 of /proc/<pid>/stat); None when it is gone.
    With the pid it names one process for good: a pid the kernel hands out again starts later."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (a worker and the jobs it started)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return members


@dataclass(frozen=True)
class ProcRecord:
    """One process the supervisor started, as ``farm.json`` keeps it: pid, start time, own group or not."""

    pid: int
    start: int | None
    group: bool  # it leads a process group (its children are in it): stop the whole group

    @classmethod
    def of(cls, pid: int, group: bool) -> ProcRecord:
        return cls(pid, _start_ticks(pid), group)

    def alive(self) -> bool:
        """The very process recorded runs (not a zombie, not a later process with the same pid)."""
        return _pid_alive(self.pid) and _start_ticks(self.pid) == self.start

    def pids(self) -> list[int]:
        """What is left of it: itself if alive, and for a group leader every member of its group that
        started after it (a job its worker left behind when the worker was killed)."""
        out = [self.pid] if self.alive() else []
        if self.group and self.start is not None:
            out += [p for p in _group_members(self.pid) if p not in out and (_start_ticks(p) or 0) >= self.start]
        return out

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM what is left of it, SIGKILL after ``timeout_s`` s; False when nothing was left."""
        pids = left = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (timeout_s if sig == signal.SIGTERM else 5.0)
            while (pids := [p for p in pids if _pid_alive(p)]) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pids:
                break
        return bool(left)


def worker_env(
    api_url: str, endpoint: S3Endpoint | None, host: str, home: Path, source_dir: Path = REPO_ROOT,
    query_s: float = QUERY_S, *, api_auth: str | None = None, key_file: Path | None = None,
) -> dict[str, str]:  # fmt: skip
    """Environment of a simulated host's worker, built from nothing: Prefect API and its auth string, S3
    keys, the path of its signing key, its name and checkout, and only :data:`INHERITED_ENV` of this
    process's environment. The process worker hands its own environment to every job it starts."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_WORKER_QUERY_SECONDS=f"{query_s:g}",
        PREFECT_WORKER_HEARTBEAT_SECONDS=f"{HEARTBEAT_S:g}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        GREENPIPE_AGENT_DIR=str(source_dir),
        GREENPIPE_AGENT_HOST=host,
        GREENPIPE_AGENT_CACHE=str(home / "cache"),
        PYTHONUNBUFFERED="1",
        # Jobs run `python -m prefect.engine`: this interpreter's environment comes first.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    if endpoint is not None:
        env.update(endpoint.env())
    if api_auth:
        env[API_AUTH_ENV] = api_auth
    if key_file is not None:
        env[AGENT_KEY_ENV] = str(key_file)
    return env


def start_worker(
    api_url: str, endpoint: S3Endpoint | None, pool: str, queue: str, host: str, state_dir: Path,
    source_dir: Path = REPO_ROOT, query_s: float = QUERY_S, *, secrets: FarmSecrets | None = None,
) -> Worker:  # fmt: skip
    """Start a process worker for ``host`` on ``pool`` / ``queue``; logs in ``state_dir/workers``.

    With ``secrets`` the worker gets the API auth string (environment) and ``host``'s signing key alone
    (a 0600 file in its home). The work pool must exist (``ensure_pool``). Returns at once;
    :func:`wait_polled` waits until it polls.
    """
    home = state_dir / "workers" / host
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    log = state_dir / "workers" / f"{host}.log"
    key_file = secrets.write_host_key(host, home / "agent.key") if secrets and host in secrets.host_keys else None
    env = worker_env(api_url, endpoint, host, home, source_dir, query_s,
                     api_auth=secrets.api_auth if secrets else None, key_file=key_file)  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--work-queue", queue,
             "--type", "process", "--name", host],
            cwd=source_dir, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group per host: its worker and the jobs it runs
        )  # fmt: skip
    return Worker(host, pool, queue, proc, log)


def locked_job_template() -> dict[str, Any]:
    """The work pool's base job template: the command and the environment are fixed, nothing may vary.

    Its variables schema admits no property at all, so the Prefect server refuses (HTTP 422, before any
    flow run exists) a deployment or flow run whose ``job_variables`` name one (``command``, ``env``,
    ``working_dir``, ...). A job's environment is its worker's, which :func:`worker_env` builds from an
    allow-list; the template adds nothing to it.
    """
    return {
        "job_configuration": {"command": JOB_COMMAND, "env": {}, "labels": {}, "name": None,
                              "stream_output": True, "working_dir": None},  # fmt: skip
        "variables": {"type": "object", "properties": {}, "additionalProperties": False},
    }


def ensure_pool(api_url: str, pool: str, queues: tuple[str, ...] | list[str], api_auth: str | None = None) -> None:
    """Create the ``process`` work pool (locked job template) and its queues unless they exist; an existing
    pool gets the locked template again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with api_settings(api_url, api_auth), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            client.update_work_pool(pool, WorkPoolUpdate(base_job_template=locked_job_template()))
        except ObjectNotFound:
            try:
                client.create_work_pool(
                    WorkPoolCreate(name=pool, type="process", base_job_template=locked_job_template())
                )
            except ObjectAlreadyExists:
                pass
        for queue in queues:
            try:
                client.read_work_queue_by_name(queue, work_pool_name=pool)
            except ObjectNotFound:
                try:
                    client.create_work_queue(name=queue, work_pool_name=pool)
                except ObjectAlreadyExists:
                    pass


def wait_polled(api_url: str, pool: str, queues: list[str], timeout_s: float = 60.0,
                workers: list[Worker] | None = None, api_auth: str | None = None) -> float:  # fmt: skip
    """Wait until a worker has polled each queue after this call; return the seconds it took."""
    from prefect.client.orchestration import get_client

    since = datetime.now(timezone.utc)
    t0 = time.monotonic()
    pending = set(queues)
    with api_settings(api_url, api_auth), get_client(sync_client=True) as client:
        while pending:
            for w in workers or []:
                if w.proc.poll() is not None:
                    tail = "\n".join(w.log.read_text(errors="replace").splitlines()[-15:])
                    raise GreenpipeError(
                        f"The worker of {w.host} (pool {w.pool}, queue {w.queue}) exited with status "
                        f"{w.proc.returncode} while starting. Last lines of {w.log}:\n{tail}"
                    )
            for q in sorted(pending):
                polled = client.read_work_queue_by_name(q, work_pool_name=pool).last_polled
                if polled is not None and polled >= since:
                    pending.discard(q)
            if pending and time.monotonic() - t0 > timeout_s:
                raise GreenpipeError(
                    f"No worker polled queue(s) {', '.join(sorted(pending))} of pool {pool} within "
                    f"{timeout_s:g} s; see the worker logs."
                )
            time.sleep(0.2)
    return time.monotonic() - t0


class LocalStack:
    """The loopback farm whose state lives in ``state_dir`` (default ``.greenpipe/farm``)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()

    # -- paths and state ---------------------------------------------------------------------------

    @property
    def prefect_dir(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    def host_s3_dir(self, host: str) -> Path:
        """State dir (keys, log, view) of ``host``'s own S3 server."""
        return self.s3_dir / "hosts" / host

    def info(self) -> dict[str, Any] | None:
        """What the supervisor wrote in ``farm.json`` (None when the stack is not up)."""
        try:
            return json.loads((self.state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> StackInfo | None:
        """The running stack's API URL and S3 endpoint, or None when it is not (fully) up."""
        info = self.info()
        if not info or not info.get("ready") or not _pid_alive(int(info.get("pid", 0))):
            return None
        api_url = LocalPrefect.api_url_of(self.prefect_dir)
        if api_url is None or not (self.s3_dir / KEYS_FILE).exists():
            return None
        secrets = FarmSecrets.load(self.state_dir)
        return StackInfo(api_url, S3Endpoint.load(self.s3_dir), info.get("bucket", DEFAULT_BUCKET), info, secrets)

    def store(self) -> ArtifactStore:
        """The artifact store on the stack's S3 server (keys from its ``s3.json``)."""
        info = self.info() or {}
        return ArtifactStore.from_endpoint(S3Endpoint.load(self.s3_dir), info.get("bucket", DEFAULT_BUCKET), PREFIX)

    # -- up / down ---------------------------------------------------------------------------------

    def up(self, hosts: tuple[str, ...] = DEFAULT_HOSTS, pool: str = DEFAULT_POOL,
           timeout_s: float = 180.0) -> StackInfo:  # fmt: skip
        """Start the supervisor in the background and return once servers and workers answer.

        A farm of this state dir that runs whole is refused; what a partly failed one left (a dead
        supervisor's children, the rest of a farm with a dead worker or server) is stopped first
        (:meth:`clean_up`), so the new farm starts clean."""
        processes = self.processes()
        if self.running() is not None and all(processes.values()):
            raise GreenpipeError(
                f"The loopback farm already runs from {self.state_dir}: `greenpipe farm status` shows it, "
                "`greenpipe farm down` stops it."
            )
        self.clean_up()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.state_dir / SUPERVISOR_LOG
        args = [sys.executable, "-m", "greenpipe.farm.stack", "--pool", pool, str(self.state_dir), *hosts]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        t0 = time.monotonic()
        while True:
            running = self.running()
            if running is not None:
                return running
            if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                why = (
                    f"exited with status {proc.returncode}"
                    if proc.poll() is not None
                    else (f"was not up within {timeout_s:g} s")
                )
                if proc.poll() is None:
                    _stop_group(proc.pid, 30.0, proc)
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise GreenpipeError(
                    f"The loopback farm (supervisor `python -m greenpipe.farm.stack`) {why}. "
                    f"Last lines of {log}:\n{tail}"
                )
            time.sleep(0.3)

    def down(self, timeout_s: float = 60.0) -> bool:
        """Stop the supervisor (which stops workers and servers) and whatever it left; False when nothing
        was running."""
        return any(self.clean_up(timeout_s).values())

    def clean_up(self, timeout_s: float = 60.0) -> dict[str, bool]:
        """Stop every process ``farm.json`` records that still runs, the supervisor first (it stops its
        children in order), then what is left (a dead supervisor's servers and workers, a killed
        worker's job); remove ``farm.json``. Returns, by name, whether each was still running."""
        procs = self._records()
        left = {name: bool(rec.pids()) for name, rec in procs.items()}
        for name in sorted(procs, key=lambda n: n != "supervisor"):
            procs[name].stop(timeout_s)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return left

    # -- status ------------------------------------------------------------------------------------

    def _records(self) -> dict[str, ProcRecord]:
        info = self.info() or {}
        return {name: ProcRecord(int(r["pid"]), r.get("start"), bool(r.get("group")))
                for name, r in info.get("procs", {}).items()}  # fmt: skip

    def processes(self) -> dict[str, bool]:
        """Whether each process the supervisor started still runs, by name (``supervisor``, ``prefect
        server``, ``s3 server``, ``s3 server <host>``, ``worker <host>``): the very process recorded,
        not a zombie (exited, not yet reaped) nor a later one with its pid."""
        return {name: rec.alive() for name, rec in self._records().items()}

    def status(self) -> dict[str, Any]:
        """Servers, pool, queues (seconds since last polled) and workers, as a plain dict; ``processes``
        says for every process the supervisor started whether it still runs, also when the farm is not
        (wholly) up."""
        running = self.running()
        out: dict[str, Any] = {"state_dir": str(self.state_dir), "up": running is not None,
                               "processes": self.processes()}  # fmt: skip
        if running is None:
            return out
        out.update(prefect=running.api_url, s3=running.endpoint.url, bucket=running.bucket,
                   pool=running.info["pool"], hosts=running.info["hosts"])  # fmt: skip
        out["workers_alive"] = {h: out["processes"].get(f"worker {h}", False) for h in running.info["hosts"]}
        out["queues"] = queue_status(running.api_url, running.info["pool"], running.secrets.api_auth)
        return out

    # -- the supervisor ------------------------------------------------------------------------------

    def serve(self, hosts: list[str], pool: str) -> None:
        """Run the stack in this process until SIGTERM/SIGINT (what ``farm up`` starts in the background)."""
        stop = {"now": False}

        def _term(signum: int, frame: Any) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        os.chmod(self.state_dir, 0o700)
        state: dict[str, Any] = {"pid": os.getpid(), "ready": False, "procs": {}}

        def record(name: str, pid: int | None, group: bool) -> None:
            # Written as each process starts: a supervisor killed half-way still leaves their names.
            if pid is not None:
                state["procs"][name] = asdict(ProcRecord.of(pid, group))
                _write_private_json(self.state_dir / STATE_FILE, state)

        record("supervisor", os.getpid(), os.getpgid(0) == os.getpid())
        secrets = FarmSecrets.load_or_create(self.state_dir, hosts)
        prefect = LocalPrefect(self.prefect_dir, api_auth=secrets.api_auth)
        s3 = LocalS3(self.state_dir / "s3-root", self.s3_dir)
        # One server per host, with its own key, that lets it write below hosts/<host>/ only.
        host_s3 = {h: LocalS3(self.state_dir / "s3-root", self.host_s3_dir(h),
                              host_view=HostView(DEFAULT_BUCKET, PREFIX, h)) for h in hosts}  # fmt: skip
        workers: list[Worker] = []
        try:
            t0 = time.monotonic()
            api_url = prefect.start()
            record("prefect server", prefect.pid, True)
            endpoint = s3.start()
            record("s3 server", s3.status().pid, False)
            ArtifactStore.from_endpoint(endpoint, DEFAULT_BUCKET).ensure_bucket()
            ensure_pool(api_url, pool, hosts, secrets.api_auth)
            from prefect.client.orchestration import get_client

            with api_settings(api_url, secrets.api_auth), get_client(sync_client=True) as c:
                ensure_deployment(c, pool)
            for host in hosts:
                host_endpoint = host_s3[host].start()
                record(f"s3 server {host}", host_s3[host].status().pid, False)
                workers.append(start_worker(api_url, host_endpoint, pool, host, host, self.state_dir,
                                            secrets=secrets))  # fmt: skip
                record(f"worker {host}", workers[-1].pid, True)
            wait_polled(api_url, pool, list(hosts), workers=workers, api_auth=secrets.api_auth)
            state.update(ready=True, api_url=api_url, s3=endpoint.url, bucket=DEFAULT_BUCKET, pool=pool,
                         hosts=list(hosts), worker_pids={w.host: w.pid for w in workers},
                         startup_s=round(time.monotonic() - t0, 2), started_at=time.time())  # fmt: skip
            _write_private_json(self.state_dir / STATE_FILE, state)
            print(f"farm up in {time.monotonic() - t0:.1f} s: {api_url}, {endpoint.url}", flush=True)
            dead: set[str] = set()
            while not stop["now"]:
                for name, rec in state["procs"].items():
                    if name not in dead and not ProcRecord(**rec).alive():
                        dead.add(name)
                        print(f"{name} (pid {rec['pid']}) died; `greenpipe farm up` starts the farm again "
                              "clean", flush=True)  # fmt: skip
                time.sleep(0.5)
        finally:
            for w in workers:
                w.stop()
            for server in host_s3.values():
                server.stop()
            s3.stop()
            prefect.stop()
            print("farm down", flush=True)


@dataclass(frozen=True)
class StackInfo:
    api_url: str
    endpoint: S3Endpoint
    bucket: str
    info: dict[str, Any]
    secrets: FarmSecrets


def queue_status(api_url: str, pool: str, api_auth: str | None = None) -> dict[str, dict[str, Any]]:
    """Per queue of ``pool``: seconds since a worker last polled it (None = never) and its status."""
    from prefect.client.orchestration import get_client

    with api_settings(api_url, api_auth), get_client(sync_client=True) as client:
        queues = client.read_work_queues(work_pool_name=pool)
    now = datetime.now(timezone.utc)
    return {
        q.name: {
            "last_polled_s": None
            if q.last_polled is None
            else round((now - q.last_polled).total_seconds(), 1),
            "status": q.status.value if q.status else None,
        }
        for q in queues
    }


def _main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Run the loopback farm in the foreground (`greenpipe farm up` "
                                 "starts this in the background).")  # fmt: skip
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("hosts", nargs="*", default=list(DEFAULT_HOSTS))
    ap.add_argument("--pool", default=DEFAULT_POOL)
    args = ap.parse_args(argv)
    LocalStack(args.state_dir).serve(args.hosts or list(DEFAULT_HOSTS), args.pool)


if __name__ == "__main__":
    _main()
