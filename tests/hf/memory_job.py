"""Run as `python memory_job.py FOLDER SETTINGS_JSON`: predict the peak of quantizing FOLDER with
`LayerwiseQuantizationConfig(**SETTINGS)`, run it, save (in shards of at most `SETTINGS["max_shard_size"]` when
given), and print one JSON line with the prediction, the measured peak (`VmHWM` of this fresh process) and the peak of
its anonymous memory (sampled: what the kernel cannot reclaim, unlike the pages of mapped checkpoint files)."""

import json
import sys
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig, LayerwiseSlicingConfig, predict_memory
from optimum_layerwise.utils.system_memory import peak_resident_bytes


sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from rss import RssSampler  # noqa: E402


folder, settings = sys.argv[1], json.loads(sys.argv[2])
slicing = settings.pop("slicing", None)
save_settings = {"max_shard_size": settings.pop("max_shard_size")} if "max_shard_size" in settings else {}
if "bits" in settings or not slicing:
    config = LayerwiseQuantizationConfig(**settings, slicing=LayerwiseSlicingConfig(**slicing) if slicing else None)
else:
    config = LayerwiseSlicingConfig(**slicing)
choice = predict_memory(folder, config)
with RssSampler() as sampler, tempfile.TemporaryDirectory() as output:
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config)
    model.save_pretrained(output, **save_settings)
result = {"predicted": choice.estimate.peak_bytes, "path": choice.estimate.path, "measured": peak_resident_bytes()}
print(json.dumps({**result, "anonymous": sampler.peaks["anon"]}))
