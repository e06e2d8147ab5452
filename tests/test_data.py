"""MedMNIST registry, download and loading. No test touches the internet: every
download goes to a local HTTP server or a closed port on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmic.data import (
    DatasetError,
    available_datasets,
    dataset_info,
    ensure_dataset,
    file_md5,
    load_dataset,
    resolve_root,
    verify_md5,
)
from fedmic.data.medmnist import ENV_ROOT
from fedmic.dataroot import default_root, source_checkout
from conftest import DATA, REPO

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


@pytest.fixture
def shared() -> Path:
    """The tests' MedMNIST folder (conftest.DATA: present and verified before any test)."""
    return DATA


@contextlib.contextmanager
def serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_empty(folder: Path):
    assert sorted(p.name for p in folder.iterdir()) == []


# --- registry -------------------------------------------------------------------------


def test_registry_matches_shared_file(shared):
    info = dataset_info("pneumoniamnist")
    assert (info.n_classes, info.n_channels) == (2, 1)
    assert info.label_names == ["normal", "pneumonia"]
    assert info.n_samples == {"train": 4708, "val": 524, "test": 624}
    assert info.md5() == hashlib.md5((shared / "pneumoniamnist.npz").read_bytes()).hexdigest()
    assert info.md5() == file_md5(shared / "pneumoniamnist.npz")
    assert verify_md5(shared / "pneumoniamnist.npz", info.md5())
    assert info.filename() == "pneumoniamnist.npz" and info.filename(128) == "pneumoniamnist_128.npz"
    assert info.url(64).split("?")[0].endswith("pneumoniamnist_64.npz")
    assert info.md5(224) != info.md5(28)
    with pytest.raises(ValueError, match="size"):
        info.url(32)


def medmnist_info() -> dict:
    """medmnist's own registry, read from its info.py (importing the package would pull
    torchvision); skipped where medmnist is not installed (`make install` installs it)."""
    spec = importlib.util.find_spec("medmnist")
    if spec is None:
        pytest.skip("medmnist not installed: the carried registry cannot be cross-checked")
    path = Path(next(iter(spec.submodule_search_locations))) / "info.py"
    info_spec = importlib.util.spec_from_file_location("_medmnist_info", path)
    module = importlib.util.module_from_spec(info_spec)
    info_spec.loader.exec_module(module)
    return module.INFO


def test_carried_registry_matches_medmnist_info():
    """Every 2D dataset, with every URL, MD5, label, size and channel count, as medmnist has it."""
    info = {flag: meta for flag, meta in medmnist_info().items() if not meta["python_class"].endswith("3D")}
    assert available_datasets() == list(info)
    for flag, meta in info.items():
        ours = dataset_info(flag)
        assert ours.name == meta["python_class"]
        assert (ours.task, ours.n_channels, ours.n_samples) == (meta["task"], meta["n_channels"], meta["n_samples"])
        assert ours.label_names == [meta["label"][k] for k in sorted(meta["label"], key=int)]
        for size in (28, 64, 128, 224):
            suffix = "" if size == 28 else f"_{size}"
            assert (ours.url(size), ours.md5(size)) == (meta[f"url{suffix}"], meta[f"MD5{suffix}"]), (flag, size)


def test_unknown_flag_lists_choices_and_3d_excluded():
    flags = available_datasets()
    assert {"pneumoniamnist", "retinamnist", "breastmnist", "bloodmnist", "chestmnist"} <= set(flags)
    assert not [f for f in flags if f.endswith("3d")]
    with pytest.raises(ValueError, match="pneumoniamnist") as err:
        dataset_info("nosuchmnist")
    assert "nosuchmnist" in str(err.value) and "organsmnist" in str(err.value)
    with pytest.raises(ValueError, match="unknown"):
        dataset_info("organmnist3d")


# --- root folder ---------------------------------------------------------------------


def fake_checkout(base: Path, shared: bool) -> Path:
    clone = base / "clone"
    clone.mkdir(parents=True)
    (clone / "pyproject.toml").write_text("[project]\n")
    if shared:
        (base / "shared" / "data" / "medmnist").mkdir(parents=True)
    return clone


def test_default_root_order(monkeypatch, tmp_path):
    """$FEDMIC_MEDMNIST_ROOT, then ../shared/data/medmnist beside the checkout, then ~/.medmnist."""
    tmp_path = tmp_path.resolve()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lone, beside = fake_checkout(tmp_path / "lone", shared=False), fake_checkout(tmp_path / "beside", shared=True)
    (tmp_path / "file" / "shared" / "data").mkdir(parents=True)
    (tmp_path / "file" / "shared" / "data" / "medmnist").write_text("not a folder")
    aside = fake_checkout(tmp_path / "file", shared=False)
    monkeypatch.delenv(ENV_ROOT, raising=False)
    assert default_root(lone) == default_root(aside) == tmp_path / "home" / ".medmnist"
    assert default_root(beside) == tmp_path / "beside" / "shared" / "data" / "medmnist"
    monkeypatch.setenv(ENV_ROOT, "")  # set but empty: as unset
    assert default_root(beside) == tmp_path / "beside" / "shared" / "data" / "medmnist"
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "env"))
    assert default_root(beside) == default_root(lone) == tmp_path / "env"


def test_command_line_rule_is_this_checkouts(monkeypatch, tmp_path):
    """resolve_root (every --root default): an explicit folder, else default_root of the
    checkout fedmic is imported from (the tests run this checkout's fedmic)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_ROOT, raising=False)
    assert source_checkout() == REPO
    assert resolve_root(None) == default_root(REPO)
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_makefile_asks_fedmic(monkeypatch, tmp_path):
    """`make demo` and `make test` export the folder fedmic's rule picks; MEDMNIST_ROOT=DIR wins."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed (the quick start needs it)")
    env = {k: v for k, v in os.environ.items() if k not in (ENV_ROOT, "MEDMNIST_ROOT", "MAKEFLAGS", "MFLAGS")}
    env["HOME"] = str(tmp_path / "home")

    def exported(*args, **extra) -> str:
        cmd = [make, "-s", "--no-print-directory", "-C", str(REPO), "--eval", "print-root: ; @echo $(FEDMIC_MEDMNIST_ROOT)",
               "print-root", *args]
        return subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, check=True).stdout.strip()

    monkeypatch.setenv("HOME", env["HOME"])
    monkeypatch.delenv(ENV_ROOT, raising=False)
    assert exported() == str(default_root(REPO).absolute())
    assert exported(**{ENV_ROOT: str(tmp_path / "env")}) == str(tmp_path / "env")
    assert exported(f"MEDMNIST_ROOT={tmp_path / 'mk'}", **{ENV_ROOT: str(tmp_path / "env")}) == str(tmp_path / "mk")


@pytest.mark.parametrize("present", [None, "cut"], ids=["offline, no files", "a cut file"])
def test_suite_stops_with_one_line(tmp_path, present):
    """No usable data: the suite stops before any test, with one line naming the variable."""
    root = tmp_path / "root"
    if present:
        root.mkdir()
        (root / "breastmnist.npz").write_bytes((DATA / "breastmnist.npz").read_bytes()[:1000])
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    # offline: every download goes to a closed port
    env.update({ENV_ROOT: str(root), "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_packaging.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == pytest.ExitCode.USAGE_ERROR and len(lines) == 1, res.stdout + res.stderr
    assert f"Set {ENV_ROOT} to a folder that has them" in lines[0] and str(root) in lines[0]
    assert ("could not be downloaded" if present is None else "has MD5") in lines[0]
    assert "passed" not in lines[0] and "skipped" not in lines[0]


def test_env_root_used_by_ensure_and_load(monkeypatch, shared):
    monkeypatch.setenv(ENV_ROOT, str(shared))
    assert ensure_dataset("breastmnist", url="http://127.0.0.1:9/", progress=False) == shared / "breastmnist.npz"
    assert load_dataset("breastmnist").train_images.shape == (546, 1, 28, 28)


# --- ensure_dataset --------------------------------------------------------------------


def test_existing_good_file_used_without_network(tmp_path, shared):
    target = tmp_path / "breastmnist.npz"
    shutil.copyfile(shared / "breastmnist.npz", target)
    before = target.stat().st_mtime_ns
    # The URL points at a closed port: any download attempt would fail loudly.
    assert ensure_dataset("breastmnist", root=tmp_path, url="http://127.0.0.1:9/", progress=False) == target
    assert target.stat().st_mtime_ns == before and file_md5(target) == BREAST_MD5
    assert [p.name for p in tmp_path.iterdir()] == ["breastmnist.npz"]


def test_download_from_local_server(tmp_path, shared):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(shared / "breastmnist.npz", served / "breastmnist.npz")
    root = tmp_path / "new" / "root"  # created on demand
    with serve(functools.partial(SimpleHTTPRequestHandler, directory=str(served))) as base:
        path = ensure_dataset("breastmnist", root=root, url=f"{base}/breastmnist.npz", progress=False)
    assert path == root / "breastmnist.npz" and file_md5(path) == BREAST_MD5
    assert [p.name for p in root.iterdir()] == ["breastmnist.npz"]


def test_download_from_file_url(tmp_path, shared):
    path = ensure_dataset(
        "breastmnist", root=tmp_path, url=(shared / "breastmnist.npz").as_uri(), progress=False
    )
    assert verify_md5(path, BREAST_MD5)
    assert [p.name for p in tmp_path.iterdir()] == ["breastmnist.npz"]


def test_download_md5_mismatch(tmp_path):
    class Wrong(Quiet):
        def do_GET(self):
            body = b"not the dataset" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Wrong) as base:
        url = f"{base}/breastmnist.npz"
        with pytest.raises(DatasetError) as err:
            ensure_dataset("breastmnist", root=tmp_path, url=url, progress=False)
    msg = str(err.value)
    assert "breastmnist" in msg and url in msg and str(tmp_path) in msg and BREAST_MD5 in msg
    assert_empty(tmp_path)


def test_http_error(tmp_path):
    class Missing(Quiet):
        def do_GET(self):
            self.send_error(404)

    with serve(Missing) as base:
        with pytest.raises(DatasetError, match="404"):
            ensure_dataset("breastmnist", root=tmp_path, url=f"{base}/x.npz", progress=False)
    assert_empty(tmp_path)


def test_no_network(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/breastmnist.npz"
    with pytest.raises(DatasetError) as err:
        ensure_dataset("breastmnist", root=tmp_path, url=url, progress=False)
    msg = str(err.value)
    assert url in msg and str(tmp_path / "breastmnist.npz") in msg and "Offline?" in msg
    assert_empty(tmp_path)


def test_timeout(tmp_path):
    # A listening socket that never answers: the request hangs until the timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/breastmnist.npz"
        with pytest.raises(DatasetError, match="timed out"):
            ensure_dataset("breastmnist", root=tmp_path, url=url, progress=False, timeout=0.3)
    assert_empty(tmp_path)


def test_truncated_body(tmp_path, shared):
    data = (shared / "breastmnist.npz").read_bytes()

    class Truncating(Quiet):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True

    with serve(Truncating) as base:
        with pytest.raises(DatasetError, match="breastmnist"):
            ensure_dataset("breastmnist", root=tmp_path, url=f"{base}/b.npz", progress=False)
    assert_empty(tmp_path)


def test_server_dies_mid_stream(tmp_path, shared):
    data = (shared / "breastmnist.npz").read_bytes()

    class Dying(Quiet):
        def do_GET(self):
            self.send_response(200)  # no Content-Length: only the MD5 can tell
            self.end_headers()
            self.wfile.write(data[:100_000])
            self.wfile.flush()
            raise ConnectionResetError("server crashed")

        def handle_one_request(self):
            with contextlib.suppress(ConnectionResetError):
                super().handle_one_request()

    with serve(Dying) as base:
        with pytest.raises(DatasetError, match="MD5"):
            ensure_dataset("breastmnist", root=tmp_path, url=f"{base}/b.npz", progress=False)
    assert_empty(tmp_path)


def test_keyboard_interrupt_cleans_up(tmp_path, monkeypatch):
    class Interrupted:
        headers = {"Content-Length": "3000"}

        def __init__(self):
            self.calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return b"x" * 1000

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupted())
    with pytest.raises(DatasetError, match="interrupted"):
        ensure_dataset("breastmnist", root=tmp_path, url="http://example.invalid/b.npz", progress=False)
    assert_empty(tmp_path)


def test_existing_wrong_md5_left_untouched(tmp_path):
    target = tmp_path / "breastmnist.npz"
    target.write_bytes(b"some other file")
    with pytest.raises(DatasetError) as err:
        ensure_dataset("breastmnist", root=tmp_path, url="http://127.0.0.1:9/", progress=False)
    msg = str(err.value)
    assert str(target) in msg and BREAST_MD5 in msg and file_md5(target) in msg and "delete" in msg
    assert target.read_bytes() == b"some other file"
    with pytest.raises(DatasetError, match="MD5"):
        load_dataset("breastmnist", root=tmp_path)
    assert target.read_bytes() == b"some other file"


# --- load_dataset --------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, train_shape, n_val, n_test, n_classes",
    [("pneumoniamnist", (4708, 1, 28, 28), 524, 624, 2), ("retinamnist", (1080, 3, 28, 28), 120, 400, 5)],
)
def test_load_real(shared, flag, train_shape, n_val, n_test, n_classes):
    data = load_dataset(flag, root=shared)
    assert (data.n_classes, data.n_channels) == (n_classes, train_shape[1])
    sizes = {"train": train_shape[0], "val": n_val, "test": n_test}
    for split, n in sizes.items():
        x, y = data.split(split)
        assert x.shape == (n, *train_shape[1:]) and x.dtype == torch.float32 and x.is_contiguous()
        assert y.shape == (n,) and y.dtype == torch.int64
        assert -1.0 <= x.min().item() and x.max().item() <= 1.0
        assert 0 <= y.min().item() and y.max().item() < n_classes
    with np.load(shared / f"{flag}.npz") as raw:
        img = raw["test_images"][7]
        expected = torch.from_numpy(img if img.ndim == 2 else img.transpose(2, 0, 1)).float()
        assert torch.allclose(data.test_images[7].reshape(expected.shape), (expected / 255 - 0.5) / 0.5)
        assert torch.equal(data.test_labels, torch.from_numpy(raw["test_labels"][:, 0].astype(np.int64)))
    with pytest.raises(ValueError):
        data.split("holdout")


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="fedmic download --dataset breastmnist"):
        load_dataset("breastmnist", root=tmp_path)


def test_corrupt_file_names_file(tmp_path):
    target = tmp_path / "pneumoniamnist.npz"
    target.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DatasetError) as err:
        load_dataset("pneumoniamnist", root=tmp_path, verify=False)
    assert str(target) in str(err.value) and "fedmic download --dataset pneumoniamnist" in str(err.value)


def test_truncated_npz(tmp_path, shared):
    data = (shared / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(data[: len(data) - 5000])
    with pytest.raises(DatasetError, match="breastmnist"):
        load_dataset("breastmnist", root=tmp_path, verify=False)


def _fixture(path: Path, n=4, rgb=False, labels=None, drop=None):
    shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.full(shape, 255, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros((n, 1), np.uint8) if labels is None else labels
    arrays.pop(drop, None)
    np.savez(path, **arrays)


def test_tiny_fixture_and_validation(tmp_path):
    path = tmp_path / "breastmnist.npz"
    _fixture(path)
    data = load_dataset("breastmnist", root=tmp_path, verify=False)
    assert data.val_images.shape == (4, 1, 28, 28) and torch.all(data.val_images == 1.0)

    _fixture(path, drop="test_labels")
    with pytest.raises(DatasetError, match="test_labels"):
        load_dataset("breastmnist", root=tmp_path, verify=False)
    _fixture(path, labels=np.array([[0], [1], [2], [1]], np.uint8))
    with pytest.raises(DatasetError, match=r"outside \[0, 2\)"):
        load_dataset("breastmnist", root=tmp_path, verify=False)
    _fixture(path, rgb=True)  # breastmnist is grayscale
    with pytest.raises(DatasetError, match="expected uint8"):
        load_dataset("breastmnist", root=tmp_path, verify=False)


def test_multilabel_rejected(tmp_path):
    with pytest.raises(DatasetError, match="multi-label"):
        load_dataset("chestmnist", root=tmp_path)
