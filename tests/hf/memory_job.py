"""Run as `python memory_job.py FOLDER SETTINGS_JSON`: predict the peak of quantizing FOLDER with
`LayerwiseQuantizationConfig(**SETTINGS)`, run it, save, and print one JSON line with the prediction and the
measured peak (`VmHWM` of this fresh process)."""

import json
import sys
import tempfile

from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig, predict_memory
from optimum_layerwise.utils.system_memory import peak_resident_bytes


folder, settings = sys.argv[1], json.loads(sys.argv[2])
slicing = settings.pop("slicing", None)
if "bits" in settings or not slicing:
    config = LayerwiseQuantizationConfig(**settings, slicing=LayerwiseSlicingConfig(**slicing) if slicing else None)
else:
    config = LayerwiseSlicingConfig(**slicing)
choice = predict_memory(folder, config)
model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)
with tempfile.TemporaryDirectory() as output:
    model.save_pretrained(output)
print(
    json.dumps(
        {"predicted": choice.estimate.peak_bytes, "path": choice.estimate.path, "measured": peak_resident_bytes()}
    )
)
