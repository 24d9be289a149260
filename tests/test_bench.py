"""Every benchmark script in bench/ runs in its quick mode (tiny random Llama built in code), so that none rots, and
its results are sane. The scripts run in this process (their child tasks too, as `--quick` does); one test runs a
child task in a fresh process, as the full runs do.

The full runs (offline demo models, minutes each) are documented in docs/benchmarks.md, not run here.
"""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers.utils import logging


BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import rss  # noqa: E402


@pytest.fixture
def run_quick(tmp_path, monkeypatch):
    """Run `bench/<script>.py --quick` in this process; check the result file's envelope and return its results.
    Restores what the script changes in this process (torch threads, transformers logging, child-process mode, the
    threads variable for children)."""
    threads, verbosity, progress_bar = (
        torch.get_num_threads(),
        logging.get_verbosity(),
        logging.is_progress_bar_enabled(),
    )
    monkeypatch.setattr(common, "FRESH_PROCESSES", True)
    monkeypatch.setenv(common.THREADS_ENV, "1")  # restored after the test, whatever the script sets

    def run(script: str) -> dict:
        output = tmp_path / f"{script}.json"
        assert importlib.import_module(script).main(["--quick", "--output", str(output)]) == output
        payload = json.loads(output.read_text())
        assert payload["benchmark"] == script and payload["quick"] is True
        assert payload["command"] == f"python bench/{script}.py --quick --output {output}"
        assert payload["machine"]["nproc"] >= 1 and payload["machine"]["torch_threads"] == 1
        assert payload["elapsed_s"] > 0 and len(payload["machine"]["loadavg_start"]) == 3
        return payload["results"]

    yield run
    torch.set_num_threads(threads)
    logging.set_verbosity(verbosity)
    if progress_bar:
        logging.enable_progress_bar()


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_summarize_ratios_and_fit():
    summary = common.summarize([2.0, 1.0, 4.0])
    assert (summary["median"], summary["min"], summary["max"], summary["n"]) == (2.0, 1.0, 4.0, 3)
    assert summary["spread_pct"] == pytest.approx(150.0)
    assert common.ratio_summary([2.0, 3.0], [1.0, 3.0])["values"] == [2.0, 1.0]
    fit = common.linear_fit([1, 2, 3], [3, 5, 7])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1) and fit["r2"] == pytest.approx(1)


def test_interleave_rotates_order():
    calls = []
    common.interleave({name: lambda name=name: calls.append(name) for name in "abc"}, 3)
    assert calls == list("abcbcacab")


def test_tensor_storage_nbytes_flattens_quanto_tensors():
    from optimum_layerwise.quantize.modules import QuantoLinear

    linear = torch.nn.Linear(256, 64, bias=False, dtype=torch.bfloat16)
    module = QuantoLinear.from_linear(linear, 4, 128)
    packed = sum(t.numel() * t.element_size() for t in (module.weight, module.weight_scale, module.weight_shift))
    assert rss.tensor_storage_nbytes(module.quanto_weight()) == pytest.approx(packed, rel=0.05)
    assert rss.model_nbytes(module) == packed


@pytest.mark.heavy
def test_run_isolated_uses_a_fresh_process(monkeypatch):
    monkeypatch.setattr(common, "FRESH_PROCESSES", True)
    floor = common.run_isolated("rss", "baseline_process")
    assert floor["peak_rss"] >= floor["live_rss"] > 0 and floor["anon"] > 0
    with pytest.raises(RuntimeError, match="no_such_task"):
        common.run_isolated("rss", "no_such_task")


def test_scoring_quick(run_quick):
    row = run_quick("scoring")["tiny"]
    assert row["tokens"] == 512
    assert positive(row["plain_s"]["median"]) and positive(row["lim_s"]["median"])
    assert 0.2 < row["ratio"]["median"] < 5
    assert row["goal_met"] == (row["ratio"]["median"] <= row["goal"])


def test_quantize_load_quick(run_quick):
    results = run_quick("quantize_load")["tiny"]
    result = results["float32:float32"]
    variants = result["variants"]
    full_precision = result["full_precision_bytes"]
    assert set(variants) == {"plain", "layerwise", "quanto-int4"}
    assert variants["plain"]["model_bytes"] == full_precision
    assert variants["layerwise"]["model_bytes"] < 0.5 * full_precision  # 4/2 bits of a float32 model
    assert variants["quanto-int4"]["model_bytes"] < full_precision
    for row in variants.values():
        assert positive(row["load_s"]["median"]) and positive(row["load_s_vs_plain"]["median"])
        assert math.isfinite(row["peak_over_baseline_vs_full_precision"])
        assert 0 < row["sampled_peak_anon"] <= row["peak_rss_after_load"]
    layerwise = variants["layerwise"]
    assert 0 < layerwise["quantize_s"]["median"] < layerwise["load_s"]["median"]
    assert layerwise["peak_rss_before_quantize"] <= layerwise["peak_rss_after_load"]


def test_footprint_quick_matches_theory_exactly(run_quick):
    result = run_quick("footprint")["tiny"]
    points = result["points"]
    assert [point["low_bit_layers"] for point in points] == [0, 2]
    assert [point["avg_bits"] for point in points] == [4.0, 3.0]
    for point in points:
        # No padding and no shared tensors in the tiny model: the bytes are the theory's, to the byte.
        assert point["loaded_model_bytes"] == point["theory_bytes"] + point["theory_buffer_bytes"]
        assert point["quantized_model_bytes"] == point["loaded_model_bytes"]
        assert point["disk_tensor_bytes"] == point["theory_bytes"]
        assert abs(point["deviation_pct"]["disk_file"]) <= 2.0  # the safetensors headers
        assert 0 < point["saving_vs_unquantized"] < 1
    assert points[1]["theory_bytes"] < points[0]["theory_bytes"]
    assert result["control_unquantized"]["model_bytes"] > points[0]["loaded_model_bytes"]
    assert result["bytes_vs_avg_bits_fit"]["loaded_model"]["slope"] > 0
    assert result["goal_met"]["loaded_model_bytes"] and result["goal_met"]["disk_file"]


def test_load_time_quick(run_quick):
    result = run_quick("load_time")["tiny"]
    assert set(result) == {"unquantized-fp32", "unquantized-bf16", "mixed-4/2-bf16"}
    assert result["mixed-4/2-bf16"]["tensor_bytes"] < result["unquantized-bf16"]["tensor_bytes"]
    assert result["unquantized-bf16"]["tensor_bytes"] * 2 == result["unquantized-fp32"]["tensor_bytes"]
    for row in result.values():
        assert positive(row["load_s"]["median"]) and positive(row["first_forward_s"]["median"])
        assert positive(row["load_s_vs_unquantized_bf16"]["median"])
    assert result["unquantized-bf16"]["load_s_vs_unquantized_bf16"]["median"] == 1.0


def test_inference_quick(run_quick):
    result = run_quick("inference")["tiny"]["bfloat16"]
    assert set(result["variants"]) == {
        "unquantized",
        "quanto-int4",
        "layerwise-int4",
        "layerwise-4/2",
        "layerwise-8/4",
        "unquantized-float32",
    }
    assert result["prefill_tokens"] == 64 and result["decode_tokens"] == 8
    for row in result["variants"].values():
        for metric in ("prefill_s", "decode_ms_per_token"):
            assert positive(row[metric]["median"]) and positive(row[f"{metric}_vs_quanto-int4"]["median"])
    assert result["variants"]["quanto-int4"]["decode_ms_per_token_vs_quanto-int4"]["median"] == 1.0
    assert result["variants"]["unquantized-float32"]["decode_vs_float32"]["median"] == 1.0
    assert set(result["cpu_decode_goal_met"]) == {"layerwise-int4", "layerwise-4/2", "layerwise-8/4"}
    sizes = {variant: row["model_bytes"] for variant, row in result["variants"].items()}
    assert sizes["layerwise-4/2"] < sizes["layerwise-int4"] < sizes["layerwise-8/4"] < sizes["unquantized"]
    assert 1.9 * sizes["unquantized"] < sizes["unquantized-float32"] <= 2 * sizes["unquantized"]
    linears = result["module_overhead"]["linears"]
    assert {row["bits"] for row in linears} == {2, 4}
    assert all(positive(row["quanto_weight_us"]) and positive(row["layerwise_us"]) for row in linears)
    assert result["module_overhead"]["quanto_weight_profile"]
    assert set(result["decode_profile"]) == {"quanto-int4", "layerwise-4/2"}
    check = result["prebuilt_check"]
    assert check["quanto-int4"]["decode_ms_per_token_vs_quanto-int4"]["median"] == 1.0
    assert positive(check["layerwise-int4-prebuilt"]["decode_ms_per_token"]["median"])


def test_scaling_quick(run_quick):
    result = run_quick("scaling")
    points = result["points"]
    assert [(point["hidden_size"], point["num_layers"]) for point in points] == [(128, 2), (256, 2)]
    assert points[1]["decoder_linear_params"] > points[0]["decoder_linear_params"]
    assert set(points[0]["lim_s"]) == {"128", "256"} and set(points[1]["lim_s"]) == {"128"}
    for point in points:
        assert positive(point["quantize_s"]) and positive(point["load_quantize_s"])
        assert 0 < point["sampled_peak_anon"] <= point["peak_rss"] and point["lim_peak_rss"] > 0
    offload = result["offload"]
    assert offload["lim"]["max_abs_score_difference"] < 1e-6
    assert positive(offload["lim"]["lim_s_vs_in_memory"])
    predictions = result["extrapolation"]["predictions"]
    assert set(predictions) == {"llama-2-7b", "llama-2-70b"}
    assert 6.5e9 < predictions["llama-2-7b"]["params"] < 7e9
    assert 6.8e10 < predictions["llama-2-70b"]["params"] < 7.0e10
    for row in predictions.values():
        assert row["mixed_4_2_bytes"] < 0.3 * row["bf16_bytes"]
        assert positive(row["quantize_s"]) and positive(row["lim_s_paper_calibration"])


def test_frontier_quick_counts_bits_from_the_files(run_quick, tmp_path):
    import frontier

    result = run_quick("frontier")["tiny"]
    rows = {(row["system"], row["target_bits"]): row for row in result["rows"]}
    assert set(rows) == {
        ("ours/quanto/layer", 4.5),
        ("ours/quanto/module", 4.5),
        ("ours/quanto/uniform", 4),
        ("ours/quanto/uniform", 8),
    }
    # 4-bit codes + a float16 scale and shift per group of 32: exactly 5 bits per weight in the saved files
    assert rows["ours/quanto/uniform", 4]["linear_bpw"] == 5.0
    assert 8.0 < rows["ours/quanto/uniform", 8]["linear_bpw"] < 8.1  # one float16 scale per output row
    assert all(positive(row["perplexity"]) and row["file_bpw"] > row["linear_bpw"] for row in result["rows"])
    assert result["fronts"]["ours/quanto/uniform"][0] == [5.0, rows["ours/quanto/uniform", 4]["perplexity"]]
    front = frontier.pareto_front([(5.0, 10.0), (6.0, 12.0), (7.0, 8.0), (4.0, 20.0)])
    assert front == [(4.0, 20.0), (5.0, 10.0), (7.0, 8.0)]
    assert frontier.interpolate(front, 6.0) == 9.0 and frontier.interpolate(front, 3.0) is None
    assert frontier.interpolate(front, 9.0) == 8.0
    measured, merged = tmp_path / "frontier.json", tmp_path / "merged.json"
    frontier.main(["--quick", "--merge", str(measured), str(measured), "--output", str(merged)])
    again = json.loads(merged.read_text())["results"]["tiny"]
    assert len(again["rows"]) == 2 * len(result["rows"]) and again["fronts"] == result["fronts"]
    assert again["rows"][0]["command"] == f"python bench/frontier.py --quick --output {measured}"
    assert set(again["by_target"]["4.5"]) == {"ours/quanto/layer", "ours/quanto/module"}


def test_frontier_grid_compares_orders_per_layer_only():
    import frontier

    points = frontier.grid(["quanto"], ["max"], ["layer", "module"], [5.0], ["sensitivity", "lim"], (8, 4), ())
    assert [frontier.system_name(point) for point in points] == [
        "ours/quanto/layer",
        "ours/quanto/module",
        "ours/quanto/layer-lim",
    ]
    assert {point["bits"] for point in points} == {(8, 4)}
    imatrix = frontier.grid(["quanto"], ["max", "imatrix"], ["module"], [4.5], ["sensitivity"], (8, 4), ())
    assert [frontier.system_name(point) for point in imatrix] == ["ours/quanto/module", "ours/quanto-imatrix/module"]
    gptq = frontier.grid(["gptq"], ["hqq"], ["module"], [4.5])
    assert [(p["optimizer"], p.get("bits"), p.get("uniform")) for p in gptq] == [
        ("max", (8, 4, 3, 2), None),
        ("max", None, 4),
        ("max", None, 8),
    ]


def test_threads_quick_times_every_setting_with_and_without_a_busy_neighbour(run_quick):
    result = run_quick("threads")
    assert result["workload"] == "forward"  # gptqmodel is not in this environment
    assert set(result["loads"]) == {"0", "1"}
    for timings in result["loads"].values():
        assert set(timings) == {"1 threads, unset", "1 threads, PASSIVE", "2 threads, unset", "2 threads, PASSIVE"}
        assert all(summary["n"] == 1 and summary["median"] > 0 for summary in timings.values())


@pytest.mark.heavy
def test_streaming_quick(run_quick):
    result = run_quick("streaming")
    assert sorted(result["runs"], key=int) == ["2", "3", "4"]
    for run in result["runs"].values():
        assert run["quantize_peak"]["anon"] > 0 and run["vm_hwm"] >= run["vm_hwm_after_quantizing"] > 0
        assert 4 < run["average_bits"] <= 6.0 and run["quality"]["verdict"] == "good"
        assert 0 < run["output_bytes"] < run["checkpoint_bytes"] * 2  # float32 embeddings, packed layers
        assert run["reload_logits_finite"] and run["reload_devices"] == ["cpu"]
    assert result["bound"]["bound"] > 0 and set(result["within_bound"]) == set(result["runs"])
    assert result["quantize_s_per_layer"]["slope"] is not None
    assert result["llama_2_70b"]["layer_parameter_ratio"] > 1


def test_slicing_quick_measures_each_variant_against_the_unsliced_model(run_quick):
    result = run_quick("slicing")["tiny"]
    variants = result["variants"]
    assert set(variants) == {
        "constant-0.25", "lim-0.25", "removal-0.25", "quantize-6.0", "slice0.1+quantize", "slice0.1+quantize-shortcuts"
    }  # fmt: skip
    for name in ("constant-0.25", "lim-0.25"):
        row = variants[name]
        assert row["achieved_sparsity"] == pytest.approx(0.25, abs=0.02)
        assert row["parameters"] < result["parameters"] and row["saved_bytes"] < result["saved_bytes"]
        assert row["forward_ratio"]["median"] > 0 and row["perplexity"] > 1
    assert len(set(variants["lim-0.25"]["widths"])) > 1
    assert len(set(variants["constant-0.25"]["widths"])) == 1
    removal = variants["removal-0.25"]
    assert removal["layers_removed"] and removal["parameters"] <= variants["constant-0.25"]["parameters"]
    assert variants["quantize-6.0"]["saved_bytes"] < result["saved_bytes"] / 2
    # on the tiny model the full-precision shortcuts alone exceed the quantized model's bytes: reported, not raised
    assert "below the smallest model" in variants["slice0.1+quantize"]["error"]
    assert variants["slice0.1+quantize-shortcuts"]["quantize_shortcuts"] is True


def test_memory_quick_predicts_and_measures_every_job(run_quick):
    result = run_quick("memory")["tiny"]
    assert set(result["jobs"]) == {"quantize-quanto", "quantize-quanto-streaming", "slice", "slice+quantize"}
    for row in result["jobs"].values():
        assert row["predicted"] > 0 and row["measured"] > 0 and row["ratio"] == row["predicted"] / row["measured"]
        assert row["measured_vs_fp32_weights"] > 0 and "refused" not in row
    assert result["jobs"]["quantize-quanto-streaming"]["path"] == "layer by layer"
