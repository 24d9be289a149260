import json

import pytest
from transformers import AutoModelForCausalLM

from optimum_layerwise import LayerwiseQuantizationConfig
from optimum_layerwise.data.calibration import split_windows
from optimum_layerwise.plan.quality import QualityCheck


TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 60


@pytest.mark.parametrize(
    "quantized, verdict, first_word",
    [(10.5, "good", "held-out"), (13.5, "degraded", "degraded:"), (25.0, "collapsed", "COLLAPSED:")],
)
def test_verdicts(quantized, verdict, first_word):
    check = QualityCheck("shakespeare", 4, 512, 10.0, quantized)
    assert check.verdict == verdict and check.summary().split()[0] == first_word
    assert QualityCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check


def test_held_out_windows_are_never_calibration_windows(tiny_checkpoint):
    ids = [list(range(start, start + 64)) for start in range(0, 4000, 64)]  # distinct windows
    calibration, held_out = split_windows(ids, num_samples=20, seq_len=64, seed=3, held_out=4)
    assert len(calibration) == 20 and len(held_out) == 4
    assert not {tuple(window) for window in held_out} & {tuple(window) for window in calibration}
    assert split_windows(ids[:5], num_samples=20, seq_len=64, held_out=4)[1] == []  # all used: nothing held out


def test_every_quantization_ends_with_the_held_out_check(tiny_checkpoint, tmp_path, caplog):
    from conftest import build_tiny_tokenizer

    config = LayerwiseQuantizationConfig(
        importance="lim",
        dataset=[TEXT] * 3,
        tokenizer=build_tiny_tokenizer(),
        num_samples=8,
        seq_len=64,
        bits=(4, 2),
        target_bits=3.0,
        group_size=32,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    quality = model.config.quantization_config.plan.quality
    assert quality["num_windows"] == 4 and quality["seq_len"] == 64 and quality["verdict"] in ("good", "degraded")
    assert quality["ratio"] == pytest.approx(quality["quantized"] / quality["unquantized"], rel=1e-3)
    assert "held-out perplexity" in caplog.text and "average bits" in caplog.text
    assert "peak memory of this process" in caplog.text
    model.save_pretrained(tmp_path / "q")
    card = (tmp_path / "q" / "README.md").read_text()
    assert "perplexity ratio" in card and "held-out tokens" in card
    saved = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["plan"]["quality"]
    assert saved == quality


def test_without_data_the_check_is_said_to_be_skipped(tiny_checkpoint, caplog):
    config = LayerwiseQuantizationConfig(importance="zd", target_bits=6.0, group_size=32)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, quantization_config=config)
    assert model.config.quantization_config.plan.quality is None
    assert "quality not measured: no calibration data" in caplog.text
