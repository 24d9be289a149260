"""Tiny random causal LMs built in code (no Hub access), shared by the tests."""

from __future__ import annotations

import os


# Tests never reach the Hugging Face Hub; set before huggingface_hub reads its constants at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)


GPTQ_AVAILABLE = importlib.util.find_spec("gptqmodel") is not None


def pytest_collection_modifyitems(config, items):
    """Without gptqmodel, deselect (not skip) the GPT-Q tests: `python dev.py test-gptq` runs them elsewhere."""
    if GPTQ_AVAILABLE:
        return
    deselected = [item for item in items if "gptq" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "gptq" not in item.keywords]
        config.stash[_GPTQ_DESELECTED] = len(deselected)


_GPTQ_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = config.stash.get(_GPTQ_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"{count} GPT-Q tests deselected: gptqmodel is not installed here; `python dev.py test-gptq` runs them."
        )


COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)

TINY_CONFIGS = {
    "llama": lambda: LlamaConfig(**COMMON),
    "mistral": lambda: MistralConfig(**COMMON, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**COMMON),
    "gemma3": lambda: Gemma3TextConfig(**COMMON, head_dim=16, sliding_window=64),
}


def build_tiny_tokenizer():
    """A character-level fast tokenizer (101 ids, fits the tiny models' vocabulary of 128), built offline."""
    import string

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for char in string.printable:
        if char not in "\x0b\x0c\r":
            vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_model(arch: str = "llama", seed: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised tiny causal LM of architecture `arch`, in float32 and eval mode."""
    config = TINY_CONFIGS[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


# the tiny Llama with its two middle layers offloaded to disk and the rest in CPU memory
OFFLOAD_DEVICE_MAP = {
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(params=sorted(TINY_CONFIGS))
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_checkpoint(tmp_path_factory, request):
    """Save a tiny model of the requested architecture (default llama) and return its folder."""
    arch_name = getattr(request, "param", "llama")
    folder = tmp_path_factory.mktemp(f"tiny-{arch_name}")
    build_tiny_model(arch_name).save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def save_layerwise(source, folder, **settings) -> torch.nn.Module:
    """Quantize the model in `source` with `LayerwiseQuantizationConfig(**settings)`, save it with the tokenizer of
    `source` to `folder` (as the CLI does) and return it."""
    from transformers import AutoTokenizer

    from optimum_layerwise import LayerwiseQuantizationConfig

    config = LayerwiseQuantizationConfig(**settings)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return model


@pytest.fixture
def token_batches():
    """Deterministic token-id calibration sequences for the tiny models (vocab 128)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 128, (6, 48), generator=generator)
