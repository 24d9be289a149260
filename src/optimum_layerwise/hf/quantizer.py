"""`LayerwiseHfQuantizer`: the transformers hooks, kept thin (the work is done in quantize.py and loading.py)."""

from __future__ import annotations

from typing import Any

from transformers.quantizers.base import HfQuantizer
from transformers.utils import logging

from ..model.layers import decoder_layers
from ..model.offload import materialized
from ..model.streaming import streaming_device_map
from ..pipelines.slice import SHORTCUTS
from ..plan.quality import QualityCheck
from ..slicing.architecture import check_sliceable
from ..slicing.layers import rebuild_sliced_shapes
from ..utils.system_memory import return_large_blocks_when_freed
from .compress import quantize_model, slice_then_quantize
from .lazy_registration import register_deferred
from .loading import (
    adopt_saved_float_dtypes,
    check_checkpoint,
    expected_tensors,
    replace_with_packed_modules,
    verify_checkpoint_files,
)
from .memory import check_memory


logger = logging.get_logger(__name__)


class LayerwiseHfQuantizer(HfQuantizer):
    """Quantize on load (score, allocate, pack layer by layer) or load a saved layer-wise checkpoint."""

    requires_calibration = False

    def __init__(self, quantization_config, **kwargs):
        super().__init__(quantization_config, **kwargs)
        self._streaming_map: dict[str, Any] | None = None  # filled before the weights load, see update_device_map
        self._low_memory: bool | None = None  # decided there when `low_memory=None`; else the config's

    def validate_environment(self, *args, device_map: Any = None, **kwargs):
        self.quantization_config.quantization_backend().require()
        if not self.pre_quantized:
            if self.quantization_config.verify:
                raise ValueError(
                    "verify=True checks a saved layer-wise checkpoint against its manifest, but the model being "
                    "loaded is not layer-wise quantized (its config.json has no layer-wise quantization_config). To "
                    "quantize it, leave `verify` unset."
                )
            self.quantization_config.check_quantizable()

    def update_device_map(self, device_map: dict[str, Any] | None) -> dict[str, Any] | None:
        """Without a `device_map`, a quantization gets an empty dict that [`_process_model_before_weight_loading`]
        fills once the model's shape is known and the memory check ([`check_memory`]) has chosen the path: every
        decoder layer on `"disk"` (read from the checkpoint's files when needed) or everything in memory."""
        if self.pre_quantized or device_map is not None:
            return device_map
        self._streaming_map = {}
        return self._streaming_map

    def _skip(self, model) -> list[str]:
        """The Linear modules kept in full precision: the config's, the model's fp32 ones, slicing's shortcuts (unless
        `quantize_shortcuts`)."""
        config = self.quantization_config
        shortcuts = list(SHORTCUTS) if config.slicing is not None and not config.quantize_shortcuts else []
        return [
            *(config.modules_to_not_convert or []),
            *(model._keep_in_fp32_modules or []),
            *shortcuts,
        ]

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        slicing = self.quantization_config.slicing
        if not self.pre_quantized:
            decoder_layers(model)  # fail before the weights load if the architecture is not supported
            if slicing is not None:
                check_sliceable(model)
            if self._streaming_map is not None:  # no device_map: this process holds what it loads
                request = self.quantization_config.request
                choice = check_memory(model, request, requested=request.low_memory, checkpoint_files=checkpoint_files)
                self._low_memory = choice.low_memory
                if self._low_memory:
                    return_large_blocks_when_freed()  # the memory of each layer read while loading goes back at once
                self._streaming_map.update(streaming_device_map(model) if self._low_memory else {"": "cpu"})
            return
        if slicing is not None:
            rebuild_sliced_shapes(model, decoder_layers(model), slicing.plan)
        plan, packed = replace_with_packed_modules(model, self.quantization_config, self._skip(model))
        if plan is not self.quantization_config.plan:  # resolved from a checkpoint that did not list its modules
            self.quantization_config = self.quantization_config.with_plan(plan)
        if checkpoint_files:
            if self.quantization_config.verify:
                verify_checkpoint_files(checkpoint_files, getattr(model.config, "_name_or_path", None))
            saved_dtypes = check_checkpoint(checkpoint_files, expected_tensors(model, packed))
            adopt_saved_float_dtypes(model, packed, saved_dtypes)

    def _process_model_after_weight_loading(self, model, **kwargs):
        if self.pre_quantized:
            backend = self.quantization_config.quantization_backend()
            for module in decoder_layers(model).modules():
                if backend.is_packed(module):
                    backend.finish_loading(module)
        else:
            # a new config holding the plan; the one passed to from_pretrained stays as it was
            if self.quantization_config.slicing is not None:
                self.quantization_config = slice_then_quantize(model, self.quantization_config, self._skip(model))
            else:
                self.quantization_config = quantize_model(
                    model, self.quantization_config, skip=self._skip(model), low_memory=self._low_memory
                )
        from ..formats.card_record import set_eval_results
        from .hub import attach_model_card  # save_pretrained/push_to_hub also write the card

        attach_model_card(model, pre_quantized=self.pre_quantized)
        quality = self.quantization_config.plan.quality
        if not self.pre_quantized and quality is not None:
            set_eval_results(model, QualityCheck.from_dict(quality).eval_results())
        return model

    def get_state_dict_and_metadata(self, model):
        """Refuse to save (before anything is written) a model whose modules do not match its plan; give the packed
        tensors in the backend's checkpoint layout. With PEFT adapters on the model, transformers saves only the
        adapters' tensors: they are taken from the model's state dict as it is."""
        if getattr(model, "_hf_peft_config_loaded", False):
            return model.state_dict(), {}
        plan = self.quantization_config.plan
        if plan is None:
            raise ValueError("Cannot save: the model has no layer-wise plan.")
        backend = self.quantization_config.quantization_backend()
        replaced, packed = {}, set()
        for index, layer in enumerate(decoder_layers(model)):
            prefix = f"{plan.layers_path}.{index}"
            modules = {
                f"{prefix}.{name}": module for name, module in layer.named_modules() if backend.is_packed(module)
            }
            for module_name, module in modules.items():
                planned = plan.modules.get(module_name)
                if planned is None or module.bits != planned.bits:
                    raise ValueError(
                        f"Cannot save: module {module_name} holds {module.bits}-bit weights but the plan says "
                        f"{planned.bits if planned else 'it is not quantized'}."
                    )
            packed.update(modules.keys())
            if backend.has_checkpoint_layout and modules:
                # a layer written to disk by low-memory quantization is read back, once, for its rewritten tensors;
                # the others stay on disk and transformers reads them shard by shard
                with materialized(layer):
                    for module_name, module in modules.items():
                        tensors = backend.checkpoint_tensors(module)
                        replaced.update({f"{module_name}.{name}": tensor for name, tensor in tensors.items()})
        unpacked = sorted(set(plan.modules) - packed)
        if unpacked:
            raise ValueError(f"Cannot save: the plan quantizes {unpacked[:3]}, which the model holds unquantized.")
        return {**model.state_dict(), **replaced}, {}

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        """Adapters (PEFT LoRA) train on top of the frozen packed weights; see `optimum_layerwise.quantize.lora`."""
        return True


register_deferred(__name__)  # when transformers' registry first loaded from this module's imports
