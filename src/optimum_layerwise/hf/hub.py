"""`save_pretrained` and `push_to_hub` of a layer-wise model: atomic saves that also write the model card.

How it hooks in: transformers has no save hook for quantizers, so
[`~optimum_layerwise.hf_quantizer.LayerwiseHfQuantizer`] calls [`attach_model_card`] once the weights are loaded. It
sets two instance attributes on the model that run the class's own method and add the card: `save_pretrained` (card
written after the weights, nothing written if the save is refused) and `_upload_modified_files`, the one method
through which both `push_to_hub` and `save_pretrained(..., push_to_hub=True)` upload a folder (transformers writes its
own placeholder README.md into that folder just before, which is why the card is put back at that point).
The card itself is rendered by `optimum_layerwise.model_card`.
"""

from __future__ import annotations

import inspect
import os
import shutil
import warnings
from pathlib import Path

from torch import nn
from transformers.utils import logging

from ..data.demo_models import demo_model_in
from ..formats.card_record import BASE_MODEL_ATTR, EVAL_RESULTS_ATTR, LICENSE_ATTR, hub_model_id, read_card_data
from ..formats.model_card import CARD_NAME, HEATMAP_NAME, build_model_card, has_model_card, write_model_card
from ..model.footprint import MAX_SHARD_BYTES, tensor_nbytes
from ..plan.saved_config import holds_layerwise_checkpoint
from ..utils.atomic import atomic_folder
from ..utils.checksums import CHECKSUMS_NAME, write_checksums


logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# The hook: instance attributes that run the class's method, then add the card


class _ModelMethodHook:
    """Callable stored on a model instance in place of one of its methods.

    It holds the model itself rather than a bound method, so `copy.deepcopy` rebinds it to the copy and pickling
    works (a module-level class; pickle's memo handles the reference cycle). It calls `type(model).<method>`, so
    attaching twice never stacks wrappers.
    """

    method = ""

    def __init__(self, model: nn.Module):
        self.model = model

    def _original(self):
        return getattr(type(self.model), self.method)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._original().__get__(self.model))

    def __repr__(self) -> str:
        return f"<{type(self.model).__name__}.{self.method} of a layer-wise model, with model card>"


# What a save writes besides the tensors (config, safetensors headers, card, heatmap, manifest), with room to spare
SAVE_OVERHEAD_BYTES = 4 * 2**20

# Previous entries of a folder that a new save never keeps: weights (transformers removes its stale shards too) and
# the files generated from the plan.
STALE_ON_SAVE = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    HEATMAP_NAME,
    CHECKSUMS_NAME,
)


class _SaveWithCard(_ModelMethodHook):
    """`model.save_pretrained`, atomic, that also writes the model card, the heatmap and the checksum manifest, in
    shards of at most [`~optimum_layerwise.model.footprint.MAX_SHARD_BYTES`] unless `max_shard_size` is given.

    Everything is written into a staging folder next to `save_directory`, then swapped into place (see
    [`~optimum_layerwise.atomic.atomic_folder`]); files of an existing `save_directory` that the save does not
    rewrite (other than stale weights) are kept, as with a plain `save_pretrained`.
    `format="compressed-tensors"` writes an export instead (see `optimum_layerwise.export`), which replaces the folder.
    """

    method = "save_pretrained"

    def __call__(self, save_directory, *args, format: str = "layerwise", overwrite_source: bool = False, **kwargs):
        model, original = self.model, self._original()
        if not overwrite_source:
            _check_not_the_source(model, save_directory)
        if format != "layerwise":
            return _save_exported(model, save_directory, format, args, kwargs)
        arguments = inspect.signature(original).bind(model, save_directory, *args, **kwargs).arguments
        if not arguments.get("is_main_process", True):
            return original(model, save_directory, *args, **kwargs)
        layerwise = has_model_card(model)
        push = arguments.get("push_to_hub", False)
        if layerwise:
            build_model_card(model)  # raises (e.g. on bad eval results) before anything is written
        if layerwise and "max_shard_size" not in arguments:  # bounds the memory of saving offloaded layers
            kwargs["max_shard_size"] = MAX_SHARD_BYTES
        if push:  # transformers names the repo after the folder it writes to: the target, not the staging folder
            kwargs.setdefault("repo_id", Path(os.fspath(save_directory)).name)
        previous_card = Path(os.fspath(save_directory)) / CARD_NAME
        folder = atomic_folder(save_directory, discard=STALE_ON_SAVE, needed_bytes=save_nbytes(model))
        with folder as staging, warnings.catch_warnings():
            # transformers warns about its own 50GB default shard size when layers are offloaded; ours is smaller
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            # a copy: the card logic decides on it as in a plain save into the folder (already there when the folder
            # is an open staging folder, written straight into)
            if previous_card.is_file() and not (staging / CARD_NAME).exists():
                shutil.copyfile(previous_card, staging / CARD_NAME)
            result = original(model, staging, *args, **kwargs)
            if layerwise and not push:  # with push, the upload hook has written it before uploading
                write_model_card(model, staging)
            write_checksums(staging)
        return result


def save_nbytes(model: nn.Module) -> int:
    """About how many bytes a save of `model` writes: its tensors and [`SAVE_OVERHEAD_BYTES`]."""
    return tensor_nbytes(model) + SAVE_OVERHEAD_BYTES


def _check_not_the_source(model: nn.Module, save_directory: str | os.PathLike) -> None:
    """Refuse to save a compressed model over the unquantized checkpoint it was loaded from.

    Raises:
        `ValueError`: naming `overwrite_source=True`, which allows it.
    """
    source = getattr(model, "name_or_path", None)
    if not source or not os.path.isdir(source) or holds_layerwise_checkpoint(source):
        return
    if os.path.realpath(source) == os.path.realpath(os.fspath(save_directory)):
        raise ValueError(
            f"save_directory={os.fspath(save_directory)!r} is the folder the unquantized model was loaded from: "
            "saving there would replace its original weights. Choose another folder, or pass "
            "`overwrite_source=True` to replace them."
        )


def _save_exported(model: nn.Module, save_directory, format: str, args: tuple, kwargs: dict) -> None:
    """`save_pretrained(save_directory, format=...)` with an export format (see `optimum_layerwise.export`)."""
    from ..formats.export import EXPORT_FORMATS, EXPORT_OPTIONS, export_model

    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be 'layerwise' or one of {EXPORT_FORMATS}, got {format!r:.40}.")
    unknown = sorted(set(kwargs) - set(EXPORT_OPTIONS[format]))
    if args or unknown:
        raise ValueError(
            f"save_pretrained(format={format!r}) takes only the destination and the options "
            f"{list(EXPORT_OPTIONS[format])}; got {unknown or 'more arguments'}. Upload an export with "
            "`huggingface_hub.upload_folder`."
        )
    export_model(model, save_directory, format, **kwargs)


class _UploadWithCard(_ModelMethodHook):
    """`model._upload_modified_files`: puts the card over transformers' placeholder README.md, then uploads."""

    method = "_upload_modified_files"

    def __call__(self, working_dir, repo_id, *args, **kwargs):
        if has_model_card(self.model):
            write_model_card(self.model, working_dir, repo_id=repo_id)
            write_checksums(working_dir)
        return self._original()(self.model, working_dir, repo_id, *args, **kwargs)


def _saved_card_text(name_or_path: str | None) -> str | None:
    """README.md of the checkpoint a model was loaded from: its folder, or the local Hub cache (never the network)."""
    if not name_or_path:
        return None
    path = Path(name_or_path) / CARD_NAME
    if not path.is_file() and hub_model_id(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, CARD_NAME)
        path = Path(cached) if isinstance(cached, str) else path
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def attach_model_card(model: nn.Module, *, pre_quantized: bool = False) -> None:
    """Make `model.save_pretrained` and `model.push_to_hub` also write the model card (see this module's docstring).

    Called by the quantizer once the weights are loaded. Sets `model.layerwise_base_model`: for a fresh quantization
    `model.name_or_path` when it is a Hub id. For a saved layer-wise checkpoint (`pre_quantized=True`) that path is the
    quantized checkpoint itself, so the base model, and the evaluation results (into `model.layerwise_eval_results`),
    are read back from the checkpoint's own README.md (its folder or the local Hub cache, never the network) when
    there is one; the base model is left out otherwise. A converted demo model names its Hub id. Sets
    `model.layerwise_license` from the loaded folder's card (or the demo model's license) when it names one. Set
    `model.layerwise_base_model = "org/name"` yourself when you loaded the full-precision model from a local copy of
    a Hub model.
    """
    name_or_path = getattr(model, "name_or_path", None)
    try:
        text = _saved_card_text(name_or_path)
        found = read_card_data(text) if text else {}
    except (OSError, ValueError) as error:
        logger.debug("Could not read the model card of %s: %s", name_or_path, error)
        found = {}
    if pre_quantized:
        base_model = found.get("base_model")
        if found.get("eval_results") and getattr(model, EVAL_RESULTS_ATTR, None) is None:
            setattr(model, EVAL_RESULTS_ATTR, found["eval_results"])
    else:
        demo = demo_model_in(name_or_path)
        base_model = demo.hub_id if demo is not None else hub_model_id(name_or_path)
        found.setdefault("license", demo.license if demo is not None else None)
    setattr(model, BASE_MODEL_ATTR, base_model)
    setattr(model, LICENSE_ATTR, found.get("license"))
    model.save_pretrained = _SaveWithCard(model)
    model._upload_modified_files = _UploadWithCard(model)
