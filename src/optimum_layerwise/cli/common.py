"""What several `optimum-layerwise` commands do alike: check `--output`, load, save, push, report the quality."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..data.demo_models import resolve_model
from ..plan.quality import QualityCheck
from ..plan.saved_config import holds_layerwise_checkpoint
from ..utils.atomic import atomic_folder, check_target_folder


# Entries of a previous checkpoint in `--output` that a new save replaces, besides the weights and the files generated
# from the plan (`hf.hub.STALE_ON_SAVE`); other files of the user's are kept
TOKENIZER_ENTRIES = (
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


def check_output(output: str, *, overwrite: bool, force: bool, model: str | None = None) -> Path:
    """Check that `--output` may be written, before any work is done; returns its absolute path.

    Refused always: a file, the current folder or one of its parents, the home folder, and the input model's folder
    or one of its parents. A non-empty folder is replaced only when it holds a layer-wise checkpoint and `overwrite`
    is set, or whatever it holds when `force` is set.
    """
    try:
        path = check_target_folder(output, "--output")
    except ValueError as error:
        raise CommandError(str(error).replace("`--output`=", "--output ")) from None
    if path == Path.home().resolve():
        raise CommandError(f"--output {output} is your home folder: choose a new folder")
    if model is not None and os.path.isdir(model):
        source = Path(os.path.realpath(model))
        if path == source or path in source.parents:
            raise CommandError(f"--output {output} would replace the input model {model}: choose another folder")
    if path.is_dir() and any(path.iterdir()):
        if holds_layerwise_checkpoint(path):
            if not (overwrite or force):
                raise CommandError(f"--output {output} holds a layer-wise checkpoint; pass --overwrite to replace it")
        elif not force:
            names = sorted(entry.name for entry in path.iterdir())
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise CommandError(
                f"--output {output} is not empty and is not a layer-wise checkpoint (it holds {shown}); choose a new "
                "folder, or pass --force to delete its content and replace it"
            )
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise CommandError(f"--output {output} is not writable: {error.strerror or error}") from None
    return path


def load_tokenizer(path: str, needed_for: str | None = "--dataset") -> Any:
    """The model's tokenizer; when it cannot be loaded, `None` if nothing needs it, else a one-line error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        if needed_for is None:
            return None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"cannot load the tokenizer of {path}, needed for {needed_for}: {reason}") from None


def check_not_quantized(path: str, model: str) -> None:
    """Refuse a model that is already quantized: only a full-precision model is quantized or sliced."""
    from transformers import AutoConfig

    saved = getattr(AutoConfig.from_pretrained(path), "quantization_config", None)
    if saved is not None:
        method = saved.get("quant_method") if isinstance(saved, dict) else getattr(saved, "quant_method", "?")
        raise CommandError(
            f"{model} is already quantized (quant_method={str(method)!r}): quantize its full-precision original. "
            "To plan another budget from a layer-wise checkpoint's measured costs, pass it as --reuse-costs."
        )


def load_for_evaluation(model: str) -> tuple[Any, Any]:
    """The model named on the command line (a layer-wise checkpoint too) and its tokenizer."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(model)
    return AutoModelForCausalLM.from_pretrained(path), load_tokenizer(path)


def save_checkpoint(model: Any, tokenizer: Any, output: Path, *, keep_other_files: bool = True) -> None:
    """Save the model and its tokenizer to `output` atomically (staged, then swapped in). Files of a previous
    checkpoint there are replaced; other files are kept unless `keep_other_files=False` (`--force`)."""
    from ..hf.hub import STALE_ON_SAVE, save_nbytes  # loads torch: not at `--help`

    discard, needed = (*STALE_ON_SAVE, *TOKENIZER_ENTRIES), save_nbytes(model)
    with atomic_folder(output, keep_other_files=keep_other_files, discard=discard, needed_bytes=needed) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)


def push_to_hub(model: Any, tokenizer: Any, repo_id: str | None) -> None:
    """Upload the model and its tokenizer to the Hub repo `repo_id`, when given."""
    if repo_id:
        model.push_to_hub(repo_id)
        if tokenizer is not None:
            tokenizer.push_to_hub(repo_id)
        print(f"pushed to https://huggingface.co/{repo_id}")


def print_quality(quality: dict | None, *wording: str) -> None:
    """The held-out check's line; `wording` as [`QualityCheck.summary`] takes it (default: quantization's)."""
    if quality is not None:
        print("quality: " + QualityCheck.from_dict(quality).summary(*wording))
    else:
        print("quality: not measured (no tokenizer to read calibration text)")


def print_memory_prediction(path: str, config: Any, dtype: str, device_map: str | None) -> None:
    """`--dry-run`: the predicted peak of every path of the job `config` on the model at `path` and the path it would
    take (raises `MemoryError` when none fits, as the job would before loading)."""
    from ..hf.memory import predict_memory

    choice = predict_memory(path, config, dtype)
    for estimate in choice.estimates:
        print(f"predicted peak: {estimate.describe()}")
    print(f"would run {choice.estimate.path}: {choice.reason}")
    if device_map is not None:
        print(f"(with --device-map {device_map}, accelerate places the model instead: not predicted)")
