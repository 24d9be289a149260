"""Register the `"layerwise"` config and quantizer with transformers, and route layer-wise GPT-Q checkpoints to them.

A GPT-Q checkpoint written by this package is a standard one (`quant_method="gptq"`), so that GPTQModel and vLLM read
it. transformers' own GPT-Q loader would ignore its per-layer bit widths and fail on the mismatched tensor shapes, so
the `"gptq"` config entry is replaced by a subclass of `GPTQConfig` that hands such checkpoints (marked by their
`"layerwise"` entry) to `LayerwiseQuantizationConfig` and everything else to `GPTQConfig` unchanged.
"""

from __future__ import annotations

from transformers.quantizers import auto
from transformers.quantizers.auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    register_quantization_config,
    register_quantizer,
)
from transformers.utils.quantization_config import GPTQConfig, QuantoConfig

from .config import QUANT_METHOD, LayerwiseQuantizationConfig
from .lazy_registration import register_deferred
from .quantizer import LayerwiseHfQuantizer
from .slicing_config import SLICING_METHOD, LayerwiseSlicingConfig
from .slicing_quantizer import LayerwiseSlicingHfQuantizer


class GPTQConfigOrLayerwise(GPTQConfig):
    """transformers' `GPTQConfig`, except that a layer-wise GPT-Q checkpoint loads as a
    [`LayerwiseQuantizationConfig`]."""

    @classmethod
    def from_dict(cls, config_dict, return_unused_kwargs=False, **kwargs):
        if "layerwise" in config_dict:
            return LayerwiseQuantizationConfig.from_dict(config_dict, return_unused_kwargs, **kwargs)
        return super().from_dict(config_dict, return_unused_kwargs, **kwargs)


def _written_by_us(config_dict: dict) -> bool:
    return isinstance(config_dict, dict) and "layer_bits" in config_dict and "importance" in config_dict


class QuantoConfigRefusingLayerwise(QuantoConfig):
    """transformers' `QuantoConfig`, except that a layer-wise config whose `quant_method` was edited to `"quanto"` is
    refused: read as a plain quanto config it would load a model with random Linear weights."""

    @classmethod
    def from_dict(cls, config_dict, return_unused_kwargs=False, **kwargs):
        if _written_by_us(config_dict):
            raise ValueError(
                "This quantization_config was written by optimum-layerwise (it holds `layer_bits`) but says "
                f"quant_method={config_dict.get('quant_method')!r}: config.json was edited. Set quant_method back to "
                "'layerwise' (and check the checkpoint with `optimum-layerwise inspect --verify`)."
            )
        return super().from_dict(config_dict, return_unused_kwargs, **kwargs)


def _register_method(method: str, config_class: type, quantizer_class: type) -> None:
    if AUTO_QUANTIZATION_CONFIG_MAPPING.get(method) is not config_class:
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(method, None)
        register_quantization_config(method)(config_class)
    if AUTO_QUANTIZER_MAPPING.get(method) is not quantizer_class:
        AUTO_QUANTIZER_MAPPING.pop(method, None)
        register_quantizer(method)(quantizer_class)


def register() -> None:
    """Make transformers know `quant_method="layerwise"` and `"layerwise_slicing"`; safe to call again (e.g. after a
    module reload)."""
    _register_method(QUANT_METHOD, LayerwiseQuantizationConfig, LayerwiseHfQuantizer)
    _register_method(SLICING_METHOD, LayerwiseSlicingConfig, LayerwiseSlicingHfQuantizer)
    if issubclass(AUTO_QUANTIZATION_CONFIG_MAPPING["gptq"], GPTQConfig):
        AUTO_QUANTIZATION_CONFIG_MAPPING["gptq"] = GPTQConfigOrLayerwise
    if AUTO_QUANTIZATION_CONFIG_MAPPING.get("quanto") is QuantoConfig:
        AUTO_QUANTIZATION_CONFIG_MAPPING["quanto"] = QuantoConfigRefusingLayerwise
    # A config passed to `from_pretrained` for a saved checkpoint contributes its loading attributes (`verify`)
    if LayerwiseQuantizationConfig not in auto.LOADING_ATTRIBUTES_CONFIG_TYPES:
        auto.LOADING_ATTRIBUTES_CONFIG_TYPES = (*auto.LOADING_ATTRIBUTES_CONFIG_TYPES, LayerwiseQuantizationConfig)


register_deferred(__name__)  # when transformers' registry first loaded from this module's imports
