"""SVD rule of the global parameter decomposition and exact byte counting."""
import math

import pytest
import torch

from fedmic.comm import (META_INT_BYTES, NonFiniteError, Payload, dense_payload, energy_rank, kept_ranks,
                         svd_decode, svd_encode)


def low_rank_plus_noise(rows=64, cols=200, rank=5, noise=1e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g) + noise * torch.randn(rows, cols, generator=g)


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.95, 0.99, 1.0])
def test_rank_is_smallest_meeting_energy(energy):
    w = low_rank_plus_noise(noise=0.3)
    s = torch.linalg.svdvals(w).double()
    k = energy_rank(s, energy)
    share = (s[:k] ** 2).sum() / (s ** 2).sum()
    assert share >= energy - 1e-12
    if k > 1:  # one fewer would miss the energy
        assert (s[:k - 1] ** 2).sum() / (s ** 2).sum() < energy


def test_reconstruction_error_equals_discarded_energy():
    w = low_rank_plus_noise(noise=0.2)
    p = svd_encode({"w": w}, energy=0.9)
    k = kept_ranks(p)["w"]
    s = torch.linalg.svdvals(w).double()
    err = ((svd_decode(p)["w"].double() - w.double()) ** 2).sum()
    # Eckart-Young: the squared Frobenius error of the rank-k truncation is the discarded energy
    assert math.isclose(err.item(), (s[k:] ** 2).sum().item(), rel_tol=1e-4)


def test_conv_tensor_reshaped_and_restored():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(64, 3, generator=g) @ torch.randn(3, 32 * 25, generator=g)
    w = base.reshape(64, 32, 5, 5)
    p = svd_encode({"conv.weight": w, "conv.bias": torch.randn(64)}, energy=0.999)
    assert p.meta["conv.weight"] == (64, 32, 5, 5, 3)
    out = svd_decode(p)
    assert out["conv.weight"].shape == w.shape
    assert torch.allclose(out["conv.weight"], w, atol=1e-3)
    assert torch.equal(out["conv.bias"], p.tensors["conv.bias"])  # biases travel dense


@pytest.mark.parametrize("shape", [(10, 10), (512, 1024), (64, 800), (2, 512), (3, 3)])
@pytest.mark.parametrize("energy", [0.5, 0.95, 1.0])
def test_factorised_upload_never_larger_than_dense(shape, energy):
    w = torch.randn(*shape)
    p = svd_encode({"w": w}, energy=energy)
    assert p.nbytes <= w.numel() * 4


def test_full_rank_random_matrix_is_sent_dense():
    w = torch.randn(64, 64)
    p = svd_encode({"w": w}, energy=0.99)
    assert "w" in p.tensors and not p.meta


def test_byte_count_equals_tensor_bytes_sent():
    w = low_rank_plus_noise(rows=128, cols=300, rank=4, noise=1e-4)
    b = torch.randn(128)
    p = svd_encode({"w": w, "b": b}, energy=0.95)
    k = kept_ranks(p)["w"]
    expected = (128 * k + k + k * 300) * 4 + 128 * 4 + META_INT_BYTES * 3  # U, s, V^T, bias, (rows, cols, k)
    assert p.nbytes == expected
    assert p.nbytes == sum(t.numel() * t.element_size() for t in p.tensors.values()) + META_INT_BYTES * 3
    half = svd_encode({"w": w, "b": b}, energy=0.95, dtype=torch.float16)
    assert half.nbytes == (expected - META_INT_BYTES * 3) // 2 + META_INT_BYTES * 3


def test_dense_payload_bytes():
    state = {"a": torch.zeros(3, 4), "n": torch.tensor(7, dtype=torch.int64)}
    assert dense_payload(state).nbytes == 12 * 4 + 8


def test_zero_matrix_is_explicit_rank_zero():
    p = svd_encode({"w": torch.zeros(50, 60)}, energy=0.95)
    assert kept_ranks(p) == {"w": 0}
    assert torch.equal(svd_decode(p)["w"], torch.zeros(50, 60))


def test_nonfinite_matrix_is_an_error():
    w = torch.randn(20, 30)
    w[3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="'w'"):
        svd_encode({"w": w}, energy=0.95)


def test_fixed_rank():
    w = torch.randn(100, 200)
    p = svd_encode({"w": w}, rank=7)
    assert kept_ranks(p) == {"w": 7}


def test_payload_reports_first_nonfinite():
    p = Payload({"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])})
    assert p.first_nonfinite() == "b"


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.0, 1e-3)])
def test_local_sgd_is_bit_identical_to_torch_sgd(momentum, weight_decay):
    from fedmic.algorithms.base import LocalSGD
    from fedmic.models import build_model
    torch.manual_seed(0)
    a = build_model("cnn", 1, 2)
    b = build_model("cnn", 1, 2)
    b.load_state_dict(a.state_dict())
    ours = LocalSGD(a.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay, foreach=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 2, (8,), generator=g)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_local_sgd_does_not_import_dynamo():
    """torch.optim.SGD() imports torch._dynamo (~2 s per training process); the functional SGD
    the algorithms use must not."""
    import subprocess
    import sys
    code = ("import sys, torch\n"
            "from fedmic.algorithms import Context, ClientData, get_algorithm\n"
            "ctx = Context(model='cnn', in_channels=1, n_classes=2, image_size=28, device=torch.device('cpu'),"
            " rounds=1, local_epochs=1, batch_size=4, lr=0.1, momentum=0.9, weight_decay=1e-4)\n"
            "from fedmic.methods import resolve_hp\n"
            "algo = get_algorithm('fedavg')(ctx, resolve_hp('fedavg', {}))\n"
            "data = ClientData(torch.rand(8, 1, 28, 28), torch.randint(0, 2, (8,)))\n"
            "algo.local_update(0, {}, algo.broadcast(algo.init_server(), 1), data, 1, torch.Generator())\n"
            "assert 'torch.optim.sgd' in sys.modules\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
