"""LoRA fine-tuning of layer-wise models with PEFT (QLoRA-style): the packed weights stay frozen and packed, small
float adapters learn on top of them.

Nothing of ours is needed: [`~optimum_layerwise.quantize.modules.QuantoLinear`] is a `torch.nn.Linear` subclass, so
PEFT wraps it with its plain LoRA `Linear`, as it wraps bitsandbytes' layers (and GPTQModel's for GPT-Q layer-wise
models). A plain `LoraConfig` works with `get_peft_model`, transformers' `model.add_adapter` and
`PeftModel.from_pretrained`:

```python
from peft import LoraConfig, get_peft_model

config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
model = get_peft_model(layerwise_model, config)  # then train it with transformers' Trainer
```

Merging an adapter into packed weights would mean quantizing again: `merge_and_unload` fails (PEFT adds the update to
the packed codes and PyTorch refuses their shape and dtype; nothing is changed). Keep the adapter separate, or merge it
into the full-precision model and quantize that.

[`with_layerwise_modules`] was needed before and is now a no-op kept for one release.
"""

from __future__ import annotations

import warnings
from typing import Any


def with_layerwise_modules(config: Any) -> Any:
    """Deprecated no-op: PEFT wraps layer-wise Linears with a plain `LoraConfig`. Returns `config` unchanged.

    Warns with a `FutureWarning`; removed in the next release.
    """
    warnings.warn(
        "with_layerwise_modules is no longer needed: PEFT wraps layer-wise Linears with a plain LoraConfig. It "
        "returns the config unchanged and will be removed in the next release.",
        FutureWarning,
        stacklevel=2,
    )
    return config


def __getattr__(name: str) -> Any:
    if name == "QuantoLoraLinear":  # the adapter layer with_layerwise_modules registered; PEFT's own layer now
        warnings.warn(
            "QuantoLoraLinear is no longer used: PEFT wraps layer-wise Linears with its own LoRA `Linear` "
            "(peft.tuners.lora.layer.Linear), which this name now points to; it will be removed in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        from peft.tuners.lora.layer import Linear

        return Linear
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
