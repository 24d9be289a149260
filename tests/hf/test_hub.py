"""Model card written by save_pretrained / push_to_hub of a layer-wise model (offline: the Hub API is intercepted)."""

import copy
import inspect
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForCausalLM

import optimum_layerwise  # noqa: F401  (registers "layerwise")
from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.formats.card_record import MARKER, hub_model_id, set_eval_results
from optimum_layerwise.formats.model_card import HEATMAP_NAME, build_model_card, write_model_card
from optimum_layerwise.model.footprint import reference_nbytes, tensor_nbytes


INPUT = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(5))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quantize(folder, **kwargs):
    settings = {"bits": (4, 2), "importance": "zd", "num_low_bit_layers": 2, "group_size": 32}
    config = LayerwiseQuantizationConfig(**{**settings, **kwargs})
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)


def human(num_bytes: float) -> str:
    return f"{num_bytes / 1024:.1f} KiB"  # the tiny models are between 1 KiB and 1 MiB


def table_rows(text: str) -> dict[int, list[str]]:
    """Rows of the bit-map table: {layer: [bits, score, rank]}."""
    section = text.split("## Bits per layer", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0].isdigit():
            rows[int(cells[0])] = cells[1:]
    return rows


@pytest.fixture
def offline_hub(monkeypatch):
    """Intercept huggingface_hub at its API boundary; returns {path_in_repo: bytes} of the last commit."""
    import huggingface_hub

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        uploaded.clear()
        for operation in operations:
            source = operation.path_or_fileobj
            uploaded[operation.path_in_repo] = open(source, "rb").read() if isinstance(source, str) else source
        return None

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    # transformers reads the repo's current card first; offline mode answers "no card" at once (no retries)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return uploaded


def test_save_pretrained_writes_the_model_card(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint)
    model.layerwise_eval_results = {"perplexity (kjv)": 41.2, "piqa/acc_norm": 0.7}
    plan = model.config.quantization_config.plan
    with torch.no_grad():
        expected = model(INPUT).logits
    model.save_pretrained(tmp_path)

    assert {"README.md", HEATMAP_NAME, "config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / HEATMAP_NAME).read_bytes().startswith(PNG_MAGIC)
    card = ModelCard.load(tmp_path / "README.md")
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-generation"
    assert metadata["tags"] == ["optimum-layerwise", "layerwise-quantization", "quanto", "4-bit", "2-bit"]
    assert "base_model" not in metadata  # quantized from a local folder: no Hub id to link
    text = card.text
    assert text.lstrip().startswith(MARKER)
    assert "| average bits | **3.00** over 4 decoder layers |" in text
    assert "| precision levels | 4 / 2 bits, chosen per decoder layer |" in text and "quanto (group size 32)" in text
    backend = model.config.quantization_config.quantization_backend()
    assert human(reference_nbytes(model, backend)) in text and human(tensor_nbytes(model)) in text
    assert "of float32, " in text and "of bfloat16, " in text and "of uniform 4-bit)" in text
    assert "import optimum_layerwise" in text and "AutoModelForCausalLM.from_pretrained(" in text
    assert f"]({HEATMAP_NAME})" in text
    assert "| perplexity (kjv) | 41.2 |" in text and "| piqa/acc\\_norm | 0.7 |" in text
    rows = table_rows(text)
    assert sorted(rows) == [0, 1, 2, 3]
    ranks = sorted(range(4), key=lambda i: -plan.layer_scores[i])
    for index, (bits, score, rank) in rows.items():
        assert int(bits) == plan.layer_bits[index]
        assert float(score) == pytest.approx(plan.layer_scores[index], rel=1e-5)
        assert int(rank) == ranks.index(index) + 1

    again = AutoModelForCausalLM.from_pretrained(tmp_path)  # the extra files do not disturb loading
    with torch.no_grad():
        assert torch.equal(again(INPUT).logits, expected)
    # the saved card is the memory of what is not in config.json: re-saving keeps the evaluation results
    assert again.layerwise_eval_results == {"perplexity (kjv)": 41.2, "piqa/acc_norm": 0.7}
    again.save_pretrained(tmp_path / "copy")
    assert "| perplexity (kjv) | 41.2 |" in (tmp_path / "copy" / "README.md").read_text()


def test_base_model_metadata(tiny_checkpoint, tmp_path):
    assert hub_model_id("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    for local in (tiny_checkpoint, "/models/llama", "./org/name", "~/org/name", "gpt2", "a/b/c", "org/na me", None):
        assert hub_model_id(local) is None, local

    model = quantize(tiny_checkpoint)
    assert model.layerwise_base_model is None  # loaded from a local folder
    model.layerwise_base_model = "HuggingFaceTB/SmolLM2-135M"  # you know better
    model.save_pretrained(tmp_path)
    metadata = ModelCard.load(tmp_path / "README.md").data.to_dict()
    assert metadata["base_model"] == "HuggingFaceTB/SmolLM2-135M"
    assert metadata["base_model_relation"] == "quantized"
    # reloading the quantized folder: its path is not the base model, the saved card knows it
    assert AutoModelForCausalLM.from_pretrained(tmp_path).layerwise_base_model == "HuggingFaceTB/SmolLM2-135M"


def test_license_and_datasets_metadata(tiny_checkpoint, tmp_path):
    (Path(tiny_checkpoint) / "README.md").write_text("---\nlicense: mit\n---\n\nA tiny model.\n")
    model = quantize(tiny_checkpoint)
    assert model.layerwise_license == "mit"  # from the base model's own card
    model.config.quantization_config.dataset = "wikitext2"  # a Hub dataset (this model was not calibrated on it)
    model.save_pretrained(tmp_path / "saved")
    metadata = ModelCard.load(tmp_path / "saved" / "README.md").data.to_dict()
    assert metadata["license"] == "mit" and metadata["datasets"] == ["Salesforce/wikitext"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "saved").layerwise_license == "mit"  # read back


def test_the_demo_models_name_their_hub_id_and_license(tmp_path):
    from optimum_layerwise.data.demo_models import demo_model_in

    assert demo_model_in(tmp_path / "smollm2-135m", cache_dir=tmp_path).hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert demo_model_in(tmp_path / "gemma3-270m", cache_dir=tmp_path).license == "gemma"
    assert demo_model_in(tmp_path / "smollm2-135m") is None  # not the demo cache
    assert demo_model_in(tmp_path / "other", cache_dir=tmp_path) is None and demo_model_in(None) is None


def test_a_readme_written_by_hand_is_kept(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint)
    mine = "# My model\n\nNotes I wrote myself.\n"
    (tmp_path / "README.md").write_text(mine)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == mine
    assert (tmp_path / HEATMAP_NAME).is_file()  # still there for you to use
    assert write_model_card(model, tmp_path) is None
    assert (tmp_path / "README.md").read_text() == mine

    # a card we generated is ours to update
    (tmp_path / "README.md").unlink()
    model.save_pretrained(tmp_path)
    set_eval_results(model, {"perplexity (kjv)": 40.0})
    model.save_pretrained(tmp_path)
    assert "| perplexity (kjv) | 40.0 |" in (tmp_path / "README.md").read_text()


def test_bad_eval_results_fail_before_anything_is_written(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint)
    with pytest.raises(ValueError, match="number or a string"):
        set_eval_results(model, {"ppl": [1, 2]})
    model.layerwise_eval_results = {"ppl": None}
    with pytest.raises(ValueError, match="'ppl' must be a number or a string"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    set_eval_results(model, {"ppl": torch.tensor(12.5)}, replace=True)  # 0-d tensors are taken as numbers
    assert model.layerwise_eval_results == {"ppl": 12.5}


def test_without_matplotlib_only_the_image_is_left_out(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    from optimum_layerwise.formats import heatmap as plotting

    def no_matplotlib():
        raise ImportError("Plotting needs matplotlib: `pip install 'optimum-layerwise[plots]'`.")

    monkeypatch.setattr(plotting, "pyplot", no_matplotlib)
    model = quantize(tiny_checkpoint)
    with caplog.at_level(logging.WARNING, logger="optimum_layerwise.hf.hub"):
        model.save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert not (tmp_path / HEATMAP_NAME).exists() and HEATMAP_NAME not in text
    assert len(table_rows(text)) == 4
    assert "without the importance heatmap" in caplog.text and "matplotlib" in caplog.text


def test_bit_map_given_by_hand_has_no_scores(tiny_checkpoint, tmp_path):
    model = quantize(
        tiny_checkpoint,
        bits=(8, 4, 2),
        importance="depth",
        layer_bits={0: 8, 1: 2, 2: 4, 3: 8},
        num_low_bit_layers=None,
    )
    model.save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert not (tmp_path / HEATMAP_NAME).exists()
    assert table_rows(text) == {0: ["8"], 1: ["2"], 2: ["4"], 3: ["8"]}
    assert "| average bits | **5.50** over 4 decoder layers |" in text
    assert ModelCard(text).data.tags[-3:] == ["8-bit", "4-bit", "2-bit"]


def test_push_to_hub_uploads_the_card(tiny_checkpoint, offline_hub):
    model = quantize(tiny_checkpoint)
    model.layerwise_eval_results = {"perplexity (kjv)": 41.2}
    model.push_to_hub("someone/tiny-layerwise", tags=["my-tag"])
    assert {"README.md", HEATMAP_NAME, "config.json", "model.safetensors"} <= set(offline_hub)
    assert offline_hub[HEATMAP_NAME].startswith(PNG_MAGIC)
    assert "layer_bits" in json.loads(offline_hub["config.json"])["quantization_config"]
    card = ModelCard(offline_hub["README.md"].decode())
    assert MARKER in card.text  # ours, not transformers' placeholder card
    assert "from_pretrained('someone/tiny-layerwise')" in card.text and "# tiny-layerwise" in card.text
    assert "| perplexity (kjv) | 41.2 |" in card.text and len(table_rows(card.text)) == 4
    assert {"optimum-layerwise", "quanto", "4-bit", "2-bit", "my-tag"} <= set(card.data.tags)


def test_save_pretrained_with_push_to_hub_uploads_the_card(tiny_checkpoint, tmp_path, offline_hub):
    model = quantize(tiny_checkpoint)
    model.save_pretrained(tmp_path, push_to_hub=True, repo_id="someone/tiny-layerwise")
    assert {"README.md", HEATMAP_NAME, "config.json", "model.safetensors"} <= set(offline_hub)
    assert MARKER in offline_hub["README.md"].decode()
    assert (tmp_path / "README.md").read_bytes() == offline_hub["README.md"]


@pytest.mark.parametrize("edited", ["hand-written", "placeholder edited"])
def test_push_keeps_a_card_written_by_hand_on_the_hub(tiny_checkpoint, offline_hub, monkeypatch, edited):
    from transformers.utils.hub import create_and_tag_model_card

    if edited == "hand-written":
        theirs = "---\nlicense: apache-2.0\n---\n\n# Hand-written card\n"
    else:  # transformers' placeholder (replaced when untouched, see above), with a line the user added
        theirs = str(create_and_tag_model_card("someone/tiny-layerwise")).replace(
            "## Model Details", "# Hand-written card\n\n## Model Details"
        )
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, repo_id, **kwargs: cls(theirs)))
    quantize(tiny_checkpoint).push_to_hub("someone/tiny-layerwise")
    uploaded = offline_hub["README.md"].decode()
    assert "# Hand-written card" in uploaded and MARKER not in uploaded
    assert offline_hub[HEATMAP_NAME].startswith(PNG_MAGIC)


def test_the_hook_follows_copies(tiny_checkpoint, tmp_path):
    model = quantize(tiny_checkpoint)
    twin = copy.deepcopy(model)
    assert twin.save_pretrained.model is twin and model.save_pretrained.model is model
    twin.layerwise_eval_results = {"twin": 1}
    twin.save_pretrained(tmp_path / "twin")
    assert "| twin | 1 |" in (tmp_path / "twin" / "README.md").read_text()
    thawed = pickle.loads(pickle.dumps(model))
    assert thawed.save_pretrained.model is thawed
    thawed.save_pretrained(tmp_path / "thawed")
    assert (tmp_path / "thawed" / "README.md").is_file()
    assert "save_directory" in str(inspect.signature(model.save_pretrained))


def test_only_layerwise_models_get_a_card():
    from conftest import build_tiny_model

    with pytest.raises(ValueError, match="not layer-wise quantized"):
        build_model_card(build_tiny_model())
