import torch

from conftest import build_tiny_model, build_tiny_tokenizer
from optimum_layerwise.evaluation.summary import summarize
from optimum_layerwise.evaluation.sweep import SweepSettings, pruned, run_sweep, save_sweep


def test_two_point_sweep_on_a_tiny_model(tmp_path):
    model, tokenizer = build_tiny_model("llama"), build_tiny_tokenizer()
    text = tmp_path / "calibration.txt"
    text.write_text("Some calibration text for the tiny model, repeated. " * 60)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("A different, held-out text about foxes and dogs! " * 60)
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(probe).logits
    settings = SweepSettings(
        bits=(4, 2), orderings=("lim", "random"), random_seeds=(0, 1), step=2, calibration=str(text),
        num_samples=4, seq_len=64, evaluation=str(held_out), eval_windows=3, eval_seq_len=64, group_size=32,
        pruning=("depth",),
    )  # fmt: skip
    rows = run_sweep(model, tokenizer, settings)

    references = {row["ordering"] for row in rows if row["kind"] == "reference"}
    assert references == {"unquantized", "all-8"}
    lim = sorted((r for r in rows if r["ordering"] == "lim"), key=lambda r: r["layers_low"])
    assert [r["layers_low"] for r in lim] == [0, 2, 4] and [r["avg_bits"] for r in lim] == [4.0, 3.0, 2.0]
    assert lim[0]["model_bytes"] > lim[1]["model_bytes"] > lim[2]["model_bytes"]
    assert sorted(lim[1]["layer_bits"].values()) == [2, 2, 4, 4]
    assert all(r["perplexity"] > 1 for r in rows)
    assert any(r["kind"] == "pruned" and r["ordering"] == "prune-depth" for r in rows)
    # shared end points are evaluated once and agree across orderings
    ends = {r["perplexity"] for r in rows if r["kind"] == "quantized" and r["layers_low"] == 4}
    assert len(ends) == 1

    random_mid = [s for s in summarize(rows) if s["ordering"] == "random" and s["layers_low"] == 2]
    assert random_mid[0]["runs"] == 2 and random_mid[0]["std"] >= 0
    with torch.no_grad():
        assert torch.equal(model(probe).logits, before)  # the model is restored to full precision

    files = save_sweep(rows, tmp_path / "out", title="tiny")
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    assert files["csv"].read_text().splitlines()[0].startswith("kind,ordering,seed,layers_low")
    assert "| 3.00 | 2 |" in files["memory"].read_text()

    from optimum_layerwise.evaluation.report import rank_table, retention_limit, sweep_table

    table = sweep_table(rows)
    assert table.splitlines()[0].startswith("| ordering | 0 low (4.00 b) | 2 low (3.00 b) | 4 low (2.00 b)")
    assert "| random (2 seeds) |" in table and "References: unquantized" in table and "prune-depth" in table
    points = [{"layers_low": 0, "avg_bits": 4.0, "mean": 10.0}, {"layers_low": 2, "avg_bits": 3.0, "mean": 11.0},
              {"layers_low": 4, "avg_bits": 2.0, "mean": 12.0}]  # fmt: skip
    assert retention_limit(points) == 3.0  # 11 <= 10 / 0.9 < 12

    ranks = rank_table([rows, rows]).splitlines()
    assert ranks[0] == "Over 2 intermediate points:"  # only the 2-layers-low point: the end points are shared
    counts = {line.split(" | ")[0][2:]: line for line in ranks[4:]}
    assert set(counts) == {"lim", "random"}
    mid = {s["ordering"]: s["mean"] for s in summarize(rows) if s["layers_low"] == 2}
    better, worse = sorted(mid, key=mid.get)
    assert counts[better] == f"| {better} | 2 | 0 | 0 |" and counts[worse] == f"| {worse} | 0 | 2 | 2 |"


def test_pruned_context_restores_the_model():
    model = build_tiny_model("gemma3")
    layers = model.model.layers
    with pruned(model, [0, 3]):
        assert len(model.model.layers) == 2 and model.config.num_hidden_layers == 2
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)
    assert model.model.layers is layers and model.config.num_hidden_layers == 4
    assert len(model.config.layer_types) == 4


def test_simulated_versions_give_the_packed_logits_and_bytes():
    from optimum_layerwise.model.footprint import tensor_nbytes
    from optimum_layerwise.quantize.swapping import LayerVersions

    model = build_tiny_model("llama")
    probe = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    packed = LayerVersions(model, "quanto", 32)
    plan = {0: 8, 1: 4, 2: 2, 3: 4}
    packed.apply(plan)
    with torch.no_grad():
        expected = model(probe).logits
    assert packed.nbytes(plan) == tensor_nbytes(model)
    packed.apply(None)
    simulated = LayerVersions(model, "quanto", 32, simulate=True)
    simulated.apply(plan)
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    with torch.no_grad():
        assert torch.equal(model(probe).logits, expected)
    assert simulated.nbytes(plan) == packed.nbytes(plan)
    assert simulated.nbytes(plan, layers=[0, 1]) < simulated.nbytes(plan)


def test_sweep_records_task_accuracies_and_reports_them(tmp_path):
    from optimum_layerwise.evaluation.report import task_metrics, task_table

    model, tokenizer = build_tiny_model("llama"), build_tiny_tokenizer()
    text = tmp_path / "text.txt"
    text.write_text("Some calibration text for the tiny model, repeated. " * 60)
    settings = SweepSettings(
        bits=(4, 2), orderings=("lim", "random"), random_seeds=(0, 1), step=2, calibration=str(text), num_samples=2,
        seq_len=32, evaluation=str(text), eval_windows=1, eval_seq_len=32, group_size=32, tasks=("piqa",),
        task_limit=3, pruning=(),
    )  # fmt: skip
    rows = run_sweep(model, tokenizer, settings)

    assert all(row["piqa/n_samples"] == 3 and 0 <= row["piqa/acc"] <= 1 for row in rows)
    assert task_metrics(rows) == ["piqa/acc", "piqa/acc_norm"]
    table = task_table(rows, "piqa/acc").splitlines()
    assert table[2].startswith("| ordering | 0 low (4.00 b) | 2 low (3.00 b) | 4 low (2.00 b) |")
    assert table[4].startswith("| lim | ") and table[5].startswith("| random (2 seeds) | ") and " ± " in table[5]
    assert table[-1].startswith("References: unquantized ") and "all-8" in table[-1]
