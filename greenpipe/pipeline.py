"""Read the expanded DVC pipeline: stage names, their outputs, their order.

dvc.yaml is the one place paths are written; code that needs a stage's
output path (the CLI, the flows) asks DVC's own index instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from greenpipe.errors import GreenpipeError


@dataclass(frozen=True)
class StageInfo:
    name: str  # e.g. "compile@ptq8-cpu"
    outs: tuple[str, ...]  # paths relative to the repo root
    deps: tuple[str, ...]  # names of the stages it depends on


def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise GreenpipeError(f"{root}: not a greenpipe checkout (no .dvc/); run from the repository root") from None


def stages(root: str | Path = ".") -> list[StageInfo]:
    """Every stage of dvc.yaml after foreach/matrix expansion, in topological order."""
    import networkx as nx

    root = Path(root).resolve()
    repo = _repo(root)
    try:
        graph = repo.index.graph
        dvcyaml = [s for s in repo.index.stages if getattr(s, "path", "").endswith("dvc.yaml")]
        keep = {id(s) for s in dvcyaml}
        order = [s for s in reversed(list(nx.topological_sort(graph))) if id(s) in keep]
        infos = []
        for stage in order:
            # `name`, not `addressing`: the latter is relative to the current directory.
            deps = tuple(sorted(p.name for p in graph.successors(stage) if id(p) in keep))
            outs = tuple(str(Path(o.fs_path).relative_to(root)) for o in stage.outs)
            infos.append(StageInfo(stage.name, outs, deps))
        return infos
    finally:
        repo.close()


def stage_out(stage: str, root: str | Path = ".") -> Path:
    """The first output path of ``stage`` (e.g. ``compile@ptq8-cpu``)."""
    for info in stages(root):
        if info.name == stage:
            return Path(root) / info.outs[0]
    names = ", ".join(i.name for i in stages(root))
    raise GreenpipeError(f"dvc.yaml has no stage {stage!r}; stages: {names}")
