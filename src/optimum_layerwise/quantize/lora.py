"""LoRA fine-tuning of layer-wise models with PEFT (QLoRA-style): the packed weights stay frozen and packed, small
float adapters learn on top of them.

GPT-Q layer-wise models need nothing of ours: PEFT wraps GPTQModel's QuantLinear layers itself. For optimum-quanto
ones, PEFT needs to be told how to wrap [`~optimum_layerwise.modules.QuantoLinear`] ([`QuantoLoraLinear`]);
[`with_layerwise_modules`] adds that to a `LoraConfig` (PEFT keeps such mappings out of `adapter_config.json`, so
pass the config again when you reload an adapter: `PeftModel.from_pretrained(model, folder, config=...)`):

```python
from peft import LoraConfig, get_peft_model
from optimum_layerwise.lora import with_layerwise_modules

config = with_layerwise_modules(LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
model = get_peft_model(layerwise_model, config)  # then train it with transformers' Trainer
```

Merging an adapter into packed weights would mean quantizing again: `merge_and_unload` raises; keep the adapter
separate, or merge it into the full-precision model and quantize that.
"""

from __future__ import annotations

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import LoraLayer

from .modules import QuantoLinear


class QuantoLoraLinear(torch.nn.Module, LoraLayer):
    """LoRA adapter around a frozen [`~optimum_layerwise.modules.QuantoLinear`]: `base(x) + B(A(dropout(x))) ·
    scaling` for each active adapter (plain LoRA; DoRA and the other variants are not supported).

    Args:
        base_layer ([`~optimum_layerwise.modules.QuantoLinear`]):
            The packed layer, kept frozen.
        adapter_name (`str`), config (`peft.LoraConfig`), r (`int`), lora_alpha (`int`):
            As for PEFT's own LoRA layers.
    """

    def __init__(
        self,
        base_layer: QuantoLinear,
        adapter_name: str,
        config: LoraConfig,
        r: int = 0,
        lora_alpha: int = 1,
        **kwargs,
    ):
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def _get_in_out_features(self, module: torch.nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def resolve_lora_variant(self, *, config: LoraConfig, **kwargs) -> None:
        variants = [name for name in ("use_dora", "use_qalora", "velora_config") if getattr(config, name, None)]
        if variants:
            raise ValueError(f"QuantoLoraLinear supports plain LoRA only; set {variants} off.")
        return None

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            update = lora_b(lora_a(self.lora_dropout[name](self._cast_input_dtype(x, lora_a.weight.dtype))))
            result = result + (update * self.scaling[name]).to(result.dtype)
        return result

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "A LoRA adapter cannot be merged into packed layer-wise weights without quantizing them again: keep the "
            "adapter separate, or merge it into the full-precision model and quantize the result."
        )

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """`B · A · scaling` of `adapter`, in the shape of the base weight `(out_features, in_features)`."""
        return (self.lora_B[adapter].weight @ self.lora_A[adapter].weight) * self.scaling[adapter]

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


def with_layerwise_modules(config: LoraConfig) -> LoraConfig:
    """Make `config` (a PEFT `LoraConfig`) wrap layer-wise optimum-quanto Linears with [`QuantoLoraLinear`]; returns
    the same config, for chaining."""
    if not isinstance(config, LoraConfig):
        raise ValueError(f"`config` must be a peft.LoraConfig, got {type(config).__name__}.")
    config._register_custom_module({QuantoLinear: QuantoLoraLinear})
    return config
