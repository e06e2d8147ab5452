"""Speed work: the benchmark (benchmarks/bench_sim.py) runs end to end and prints every row
(tiny settings; no timing is asserted, the machine is shared), and the SVD pre-check that
made FedMIC rounds faster leaves every payload bit-identical."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_prints_every_row():
    cmd = [sys.executable, str(REPO / "benchmarks/bench_sim.py"), "--dataset", "breastmnist", "--root", str(DATA),
           "--clients", "3", "--scale-clients", "6", "--batch-size", "64", "--repeats", "1", "--threads", "1",
           "--fedmic-hp", '{"student_width": 0.25, "teacher_width": 0.25}', "--options"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0].isdigit():
            rows.setdefault(cells[0], []).append(cells)
    assert sorted(rows) == ["1", "2", "3", "4", "5", "6", "7"], text
    for r in ("1", "2", "3", "4"):  # round seconds and images/s measured and positive
        (cells,) = rows[r]
        assert float(cells[2]) > 0 and float(cells[3]) > 0, cells
    assert re.search(r"\| [\d.]+x = fedavg's speed-up \|", text), text
    assert [c[1] for c in rows["5"]] == ["fedavg", "fedmic"]
    svd_s = float(rows["5"][1][4])
    assert svd_s > 0, "FedMIC's SVD codec time was not measured"
    # row 6: the bare loop and both methods at both client counts, the larger one with 6 clients x ~91 images
    assert [(c[1], c[2].split(" x ")[0]) for c in rows["6"]] == [("limit", "3"), ("limit", "6"), ("fedavg", "3"),
                                                                  ("fedavg", "6"), ("fedmic", "3"), ("fedmic", "6")]
    assert "memory format channels_last" in text  # auto on CPU
    # row 7: every PyTorch option timed on the bare loop, vmap over the 3 clients
    assert [c[1] for c in rows["7"]] == ["eager, 1 thread", "channels_last", "torch.compile",
                                         "torch.func vmap over 3 clients"], text
    assert all(float(c[4]) > 0 for c in rows["7"]), rows["7"]


def _dense_rank(rows, cols):
    """Smallest rank at which float32 factors plus metadata are no smaller than the matrix."""
    return next(k for k in range(rows + 1) if k * (rows + cols + 1) * 4 + 4 * 3 >= rows * cols * 4)


def _share_spectrum(rows, k_dense, share):
    """Singular values whose best rank k_dense-1 holds `share` of the energy."""
    s = torch.empty(rows, dtype=torch.float64)
    s[:k_dense - 1] = (share / (k_dense - 1)) ** 0.5
    s[k_dense - 1:] = ((1 - share) / (rows - k_dense + 1)) ** 0.5
    return s


def _with_spectrum(rows, cols, s, g):
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    return ((u[:, :len(s)] * s) @ v[:, :len(s)].T).float()


def test_dense_precheck_skips_svds_and_keeps_payloads_identical(monkeypatch):
    """The speed-up of svd_encode (no SVD for a matrix certain to be sent dense) must give the
    very payload the SVD path gives, also for matrices next to the dense threshold."""
    from fedmic import comm

    g = torch.Generator().manual_seed(0)
    rows, cols, energy = 96, 160, 0.95
    k_dense = _dense_rank(rows, cols)
    state = {"near_full_rank": torch.randn(rows, cols, generator=g),
             "conv": torch.randn(16, 8, 3, 3, generator=g),
             "low_rank": torch.randn(rows, 4, generator=g) @ torch.randn(4, cols, generator=g),
             "zero": torch.zeros(rows, cols), "bias": torch.randn(rows, generator=g)}
    # energy share of the best rank k_dense-1 just below, inside and above the check's margin
    for share in (energy - 2e-3, energy - 2e-4, energy + 2e-4, energy + 0.03):
        state[f"share_{share:.4f}"] = _with_spectrum(rows, cols, _share_spectrum(rows, k_dense, share), g)

    calls = []
    svd = torch.linalg.svd
    monkeypatch.setattr(comm.torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    for kw in ({"energy": energy}, {"rank": k_dense}, {"rank": 3}):
        calls.clear()
        fast = comm.svd_encode(state, dense_check=True, **kw)
        n_fast = len(calls)
        calls.clear()
        ref = comm.svd_encode(state, dense_check=False, **kw)
        assert fast.meta == ref.meta and fast.tensors.keys() == ref.tensors.keys()
        assert all(torch.equal(fast.tensors[k], ref.tensors[k]) for k in ref.tensors)
        assert n_fast < len(calls) if "energy" in kw or kw["rank"] >= k_dense else n_fast == len(calls)
    energy_payload = comm.svd_encode(state, energy)
    # both kinds of outcome occur next to the threshold, so the test exercises both paths
    assert {"low_rank", "zero", f"share_{energy + 2e-4:.4f}"} <= set(energy_payload.meta)
    assert {"near_full_rank", f"share_{energy - 2e-3:.4f}", f"share_{energy - 2e-4:.4f}"} <= set(energy_payload.tensors)


def test_reference_proves_uploads_dense_without_their_eigendecomposition(monkeypatch):
    """With the broadcast as reference, svd_encode must give the payload the SVD path gives,
    also when the upload has crossed the threshold the reference is below, and it must skip
    the upload's own Gram eigendecomposition when the upload is close to the reference."""
    from fedmic import comm

    g = torch.Generator().manual_seed(1)
    rows, cols, energy = 96, 160, 0.95
    k_dense = _dense_rank(rows, cols)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))

    def share_matrix(share):  # the same singular vectors for every share
        return ((u * _share_spectrum(rows, k_dense, share)) @ v[:, :rows].T).float()

    ref_w = share_matrix(energy - 0.05)
    reference = comm.SpectralReference({"w": ref_w, "b": torch.zeros(rows)})
    uploads = {
        "close": ref_w + 1e-4 * torch.randn(rows, cols, generator=g),
        "far": ref_w + 0.2 * torch.randn(rows, cols, generator=g),
        "crossed, just above": share_matrix(energy + 2e-4),
        "crossed, just below the margin": share_matrix(energy - 2e-4),
        "low rank": torch.randn(rows, 3, generator=g) @ torch.randn(3, cols, generator=g),
        "zero": torch.zeros(rows, cols),
    }
    calls = []
    eigvalsh = torch.linalg.eigvalsh
    monkeypatch.setattr(comm.torch.linalg, "eigvalsh", lambda *a, **k: calls.append(1) or eigvalsh(*a, **k))
    outcome = {}
    for name, w in uploads.items():
        calls.clear()
        fast = comm.svd_encode({"w": w}, energy, reference=reference)
        outcome[name] = (bool(fast.meta), len(calls))
        slow = comm.svd_encode({"w": w}, energy, dense_check=False)
        assert fast.meta == slow.meta and fast.tensors.keys() == slow.tensors.keys(), name
        assert all(torch.equal(fast.tensors[k], slow.tensors[k]) for k in slow.tensors), name
    # the reference's own spectrum is computed once (first upload), then reused
    assert outcome["close"] == (False, 1)
    assert outcome["far"] == (False, 1)  # the bound cannot prove it: the upload's own spectrum decides
    assert outcome["crossed, just above"][0] and outcome["low rank"][0]
    assert not outcome["crossed, just below the margin"][0]
    assert outcome["zero"][0]  # the explicit rank-0 record
    # a reference whose share is well above the threshold: a close upload goes straight to the SVD
    high = share_matrix(energy + 0.04)
    calls.clear()
    up = {"w": high + 1e-4 * torch.randn(rows, cols, generator=g)}
    fast = comm.svd_encode(up, energy, reference=comm.SpectralReference({"w": high}))
    assert fast.meta and len(calls) == 1  # the reference's spectrum only
    slow = comm.svd_encode(up, energy, dense_check=False)
    assert fast.meta == slow.meta and all(torch.equal(fast.tensors[k], slow.tensors[k]) for k in slow.tensors)
    # a reference of another shape (or a missing one) is ignored, not misused
    calls.clear()
    other = comm.SpectralReference({"w": torch.randn(rows, cols + 1, generator=g)})
    assert not comm.svd_encode({"w": uploads["close"]}, energy, reference=other).meta
    assert len(calls) == 1


def test_fedmic_encodes_uploads_against_the_broadcast_they_left(monkeypatch):
    """FedMIC's `decompose: params` uploads use the broadcast they were trained from as the codec's
    reference; `delta` uploads (small matrices around zero) do not."""
    from fedmic import comm, gpd
    from fedmic.algorithms.base import Context
    from fedmic.algorithms.fedmic import FedMIC
    from fedmic.methods import resolve_hp

    seen = []
    encode = comm.svd_encode
    monkeypatch.setattr(gpd, "svd_encode",
                        lambda *a, reference=None, **k: seen.append(reference) or encode(*a, reference=reference, **k))
    for decompose in ("params", "delta"):
        ctx = Context(model="cnn", in_channels=1, n_classes=2, image_size=28, device=torch.device("cpu"),
                      rounds=2, local_epochs=1, batch_size=8, lr=0.01, momentum=0.0, weight_decay=0.0,
                      transport_dtype=torch.float32)
        algo = FedMIC(ctx, resolve_hp("fedmic", {"decompose": decompose}))
        server = algo.init_server()
        start, _ = algo.channel.rebuild(None, algo.downlink(server, 1, 0))
        seen.clear()
        up = algo.channel.upload(start, start, 1)
        ref = seen[-1]
        if decompose == "params":
            assert ref is not None and ref.state is start
            assert "encoder.fc.weight" not in comm.kept_ranks(up)  # a full-rank init is sent dense
        else:
            assert ref is None


@pytest.mark.parametrize("values, finite", [
    ([1.0, -2.0, 3.0], True),
    ([3e38, 3e38, 3e38], True),            # the sum overflows, the values are finite
    ([1.0, float("inf")], False),
    ([float("-inf"), float("inf")], False),
    ([0.0, float("nan")], False),
    ([], True),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_all_finite_matches_elementwise_check(values, finite, dtype):
    """The engine's fast finiteness check (one sum first) says what torch.isfinite(t).all() says."""
    from fedmic.comm import all_finite

    t = torch.tensor(values, dtype=torch.float32)
    if dtype == torch.float16:
        t = t.clamp(-6e4, 6e4).to(dtype) if finite else t.to(dtype)
    t = t.repeat(1000) if len(values) else t
    assert all_finite(t) == bool(torch.isfinite(t).all()) == finite


def _run(script, *args, timeout=600):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_grid_cost_counts_every_runs_images(tmp_path):
    """benchmarks/grid_cost.py on config/tiny.yaml: one estimate per run of the grid, the images
    each trains and evaluates from the grid and the dataset's official sizes, positive times,
    and the N-job total between the one-device total / N and the one-device total."""
    from fedmic import grid
    from fedmic.data.medmnist import dataset_info
    sys.path.insert(0, str(REPO / "benchmarks"))
    import grid_cost

    est = tmp_path / "est.json"
    text = _run("grid_cost.py", "--config", str(REPO / "config/tiny.yaml"), "--jobs", "1", "2", "--probe-rounds", "1",
                "--root", str(DATA), "--json", str(est))
    runs = json.loads(est.read_text())
    config = grid_cost.load_config(str(REPO / "config/tiny.yaml"))
    keys = grid.all_runs(config)
    assert len(runs) == len(keys) == 2  # fedavg and fedmic, one seed
    n = dataset_info("breastmnist").n_samples
    for e in runs:
        # 2 rounds x 1 epoch x all 3 clients; evaluated every round on validation + test
        assert e["trained_images"] == 2 * n["train"] and e["evaluated_images"] == 2 * (n["val"] + n["test"])
        assert e["seconds"] > 0
    total = sum(e["seconds"] for e in runs)
    rows = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in text.splitlines()
                              if line.startswith("| "))}
    assert {"fedavg", "fedmic", "**all**"} <= set(rows)
    assert grid_cost.makespan([e["seconds"] for e in runs], 2) == max(e["seconds"] for e in runs)
    # longest first onto the least loaded slot: {5} {1, 1, 1, 1, 1}; {3, 2, 2} {3, 2} (7, the best is 6)
    assert grid_cost.makespan([1.0, 5.0, 1.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert grid_cost.makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0
    assert total / 2 <= grid_cost.makespan([e["seconds"] for e in runs], 2) <= total


def test_grid_cost_estimates_tuning_trials_and_tuned_runs(tmp_path):
    """A config that tunes: every trial is a run of the estimate, and a tuned arm's runs are
    estimated at its own settings (its selection does not exist before tuning)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import grid_cost

    config = grid_cost.load_config(str(REPO / "config/tiny.yaml"))
    config["tuning"] = {"budget": 3, "rounds": 1, "seed": 100, "arms": ["fedavg"]}
    config["tables"]["t2"] = {"arms": ["fedavg-tuned", "fedmic"]}
    runs = grid_cost.run_configs(config)
    assert sorted(k.arm for k in runs) == ["fedavg-trial00", "fedavg-trial01", "fedavg-trial02", "fedavg-tuned",
                                           "fedmic"]
    assert runs[next(k for k in runs if k.arm == "fedavg-tuned")]["lr"] == config["train"]["lr"]
    assert all(runs[k]["rounds"] == 1 for k in runs if "trial" in k.arm)
    # trials differ in lr only (FedAvg has no hyperparameters): one probe serves them all
    trials = [runs[k] for k in runs if k.arm.startswith("fedavg-")]
    assert len({r["lr"] for r in trials}) > 1 and len({grid_cost.cost_signature(r, 1) for r in trials}) == 1


def test_eval_cost_splits_evaluation_and_compares_metrics():
    text = _run("eval_cost.py", "--dataset", "breastmnist", "--synthetic", "--clients", "3", "--rounds", "1",
                "--auc-against", "HEAD")
    assert "(synthetic images)" in text and "546 training, 78 validation, 156 test images" in text
    (median,) = [line for line in text.splitlines() if line.startswith("| median")]
    train_s, eval_s, forward_s = (float(c) for c in median.strip("|").split("|")[1:4])
    assert train_s > 0 and 0 < forward_s <= eval_s
    assert "AUC + F1 on 156 x 2" in text


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_evaluation_batch_size_does_not_change_predictions(model):
    """predict's batch (64, chosen for speed) gives bit for bit the predictions of larger
    batches, so the choice changes no reported number."""
    from fedmic.simulation.evaluation import predict
    from fedmic.models import build_model

    torch.manual_seed(0)
    m = build_model(model, 1, 8).to(memory_format=torch.channels_last)
    x = torch.rand(300 if model == "cnn" else 70, 1, 28, 28) * 2 - 1
    ref = predict(m, x, batch=len(x))
    assert (predict(m, x) == ref).all() and (predict(m, x, batch=256) == ref).all()
