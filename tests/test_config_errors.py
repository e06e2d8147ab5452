"""Bad input fails early with one clear line that names the problem and the fix; through the
command line it is exit status 2 and no traceback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fedmic.cli import main as cli_main
from fedmic.config import ConfigError, RunConfig
from fedmic.data.medmnist import DatasetError, ensure_dataset, load_dataset
from fedmic.data.partition import PartitionError, make_partition, save_partition
from fedmic.engine import Simulation
from conftest import DATA

FLAG = "breastmnist"
BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


def cli_error(capsys, argv) -> str:
    """Run the CLI in-process; it must return 2 and print exactly one error line."""
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"fedmic {argv[0]}: error: ")
    return lines[0]


def train_argv(tmp_path, config: dict, *sets: str, partition: str = "p.json") -> list[str]:
    argv = ["train", "--config", json.dumps({"dataset": FLAG, **config}), "--partition", str(tmp_path / partition),
            "--out", str(tmp_path / "run.json"), "--root", str(DATA)]
    for s in sets:
        argv += ["--set", s]
    return argv


# --------------------------------------------------------------------------- run config

@pytest.mark.parametrize("kw, expected", [
    ({"method": "fedfoo"}, r"unknown method 'fedfoo'; choose one of: .*fedavg.*fedmic"),
    ({"lam": 0.0}, r"lam \(Dirichlet concentration\) must be > 0, got 0.0"),
    ({"lam": -0.5}, r"lam \(Dirichlet concentration\) must be > 0, got -0.5"),
    ({"join_ratio": 0.0}, r"join_ratio must be in \(0, 1\], got 0.0"),
    ({"join_ratio": 1.5}, r"join_ratio must be in \(0, 1\], got 1.5"),
    ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\), got 1.0"),
    ({"on_nonfinite": "ignore"}, r"on_nonfinite must be 'error' or 'skip', got 'ignore'"),
    ({"scheme": "iid"}, r"unknown partition scheme 'iid'; choose one of: dirichlet_label, dirichlet_client"),
    ({"method": "fedmic", "hp": {"taux": 2}}, r"unknown hyperparameter\(s\) \['taux'\] for method 'fedmic'; valid: alpha, beta, tau, "),
    ({"lr": "1e-3"}, r"lr must be a number, got '1e-3' \(str\) \(YAML reads 1e-3 as a string: write 1.0e-3\)"),
    ({"clients": 4.5}, r"clients must be of type int, got 4.5"),
    ({"rounds": True}, r"rounds must be of type int, got True \(bool\)"),
    ({"memory_format": "nhwc"}, r"memory_format must be auto, channels_last or contiguous, got 'nhwc'"),
])
def test_run_config_rejects(kw, expected):
    with pytest.raises(ConfigError, match=expected):
        RunConfig(dataset=FLAG, **kw)


def test_unknown_config_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown run config key\(s\) \['lrr'\]; valid keys: .*'lr'"):
        RunConfig.from_dict({"dataset": FLAG, "lrr": 0.1})


@pytest.mark.parametrize("hp, expected", [
    ({"energy_start": 1.5}, r"'energy_start' must be a number in \(0, 1\], got 1.5"),
    ({"energy_end": 0.0}, r"'energy_end' must be a number in \(0, 1\], got 0.0"),
    ({"energy_start": 0.99, "energy_end": 0.95},
     r"energy_start \(0.99\) > energy_end \(0.95\); the threshold grows over the rounds, so set energy_start <= energy_end"),
])
def test_fedmic_energy_schedule_rejected(hp, expected):
    with pytest.raises(ConfigError, match=expected):
        RunConfig(dataset=FLAG, method="fedmic", hp=hp)


# --------------------------------------------------------------------------- command line

@pytest.mark.parametrize("sets, expected", [
    (["lam=0"], "lam (Dirichlet concentration) must be > 0, got 0"),
    (["join_ratio=2"], "join_ratio must be in (0, 1], got 2"),
    (["method=fedfoo"], "unknown method 'fedfoo'; choose one of:"),
    (["lr=1e-3"], "write 1.0e-3"),
    (["nope=1"], "unknown run config key(s) ['nope']"),
])
def test_cli_train_bad_value_one_line(tmp_path, capsys, sets, expected):
    assert expected in cli_error(capsys, train_argv(tmp_path, {}, *sets))


def test_cli_train_bad_value_real_process(tmp_path):
    """The installed entry point: status 2, one line on stderr, no traceback."""
    exe = Path(sys.executable).with_name("fedmic")
    argv = train_argv(tmp_path, {"lr": -1})
    p = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "fedmic train: error: lr must be > 0, got -1"


def test_cli_missing_or_malformed_files(tmp_path, capsys):
    line = cli_error(capsys, train_argv(tmp_path, {}, partition="missing.json"))
    assert f"partition file {tmp_path / 'missing.json'} not found; make it with `fedmic partition" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    line = cli_error(capsys, ["train", "--config", str(bad), "--partition", "p.json", "--out", str(tmp_path / "o.json")])
    assert f"{bad}\", line 1" in line  # names the file and the line


def test_unknown_dataset_lists_choices(tmp_path, capsys):
    line = cli_error(capsys, ["partition", "--dataset", "foomnist", "--root", str(DATA), "--lam", "0.5",
                              "--clients", "4", "--out", str(tmp_path / "p.json")])
    assert "unknown MedMNIST 2D dataset 'foomnist'; choose one of:" in line
    assert "breastmnist" in line and "pneumoniamnist" in line
    line = cli_error(capsys, train_argv(tmp_path, {"dataset": "foomnist"}))
    assert "unknown MedMNIST 2D dataset 'foomnist'" in line and "bloodmnist" in line


def test_more_clients_than_images(tmp_path, capsys):
    y = load_dataset(FLAG, DATA).split("train")[1].numpy()
    with pytest.raises(ValueError, match=r"more clients than images allow: 100 clients x min_size 10 = 1000 > 546 "
                                         r"training images; use fewer clients or a smaller min_size"):
        make_partition("dirichlet_label", {"train": y}, 100, 0.5, 0, 10)
    line = cli_error(capsys, ["partition", "--dataset", FLAG, "--root", str(DATA), "--lam", "0.5",
                              "--clients", "100", "--out", str(tmp_path / "p.json")])
    assert "more clients than images allow" in line
    assert not (tmp_path / "p.json").exists()


def test_unreachable_min_size_names_the_other_scheme():
    y = load_dataset("pneumoniamnist", DATA).split("train")[1].numpy()
    with pytest.raises(PartitionError, match=r"dirichlet_label partition failed.*Fix: .*scheme 'dirichlet_client'"):
        make_partition("dirichlet_label", {"train": y}, 100, 0.1, 0, 10)


# --------------------------------------------------------------------------- data files

def test_corrupt_or_truncated_dataset_file(tmp_path):
    target = tmp_path / f"{FLAG}.npz"
    target.write_bytes((DATA / f"{FLAG}.npz").read_bytes()[:100_000])  # a cut download
    with pytest.raises(DatasetError, match=rf"has MD5 [0-9a-f]{{32}}, expected {BREAST_MD5} \(truncated, corrupt or "
                                           rf"another release\)\. Fix: delete it and download it again, `rm .*{FLAG}\.npz && "
                                           rf"fedmic download --dataset {FLAG} --size 28 --root {tmp_path}`"):
        load_dataset(FLAG, tmp_path)
    target.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match=r"cannot read .* as a MedMNIST \.npz \(ValueError: not a \.npz \(zip\) archive\)\. Fix: `rm "):
        load_dataset(FLAG, tmp_path, verify=False)
    assert target.read_bytes() == b"not a zip at all"  # never deleted behind the user's back


def test_missing_file_while_offline(tmp_path):
    with pytest.raises(DatasetError, match=rf"'{FLAG}' \(28x28 images\) not found at .*Run `fedmic download --dataset {FLAG} --size 28 --root {tmp_path}`"):
        load_dataset(FLAG, tmp_path)
    with socket.socket() as s:  # a port nothing listens on: as good as no network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{FLAG}.npz"
    with pytest.raises(DatasetError) as e:
        ensure_dataset(FLAG, tmp_path, url=url, progress=False, timeout=5)
    msg = str(e.value)
    assert f"could not download MedMNIST dataset '{FLAG}' from {url}" in msg
    assert f"Offline? download {url} elsewhere and copy it to {tmp_path / (FLAG + '.npz')}" in msg
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- partition vs run

def test_partition_made_for_other_settings_is_refused(tmp_path, capsys):
    data = load_dataset(FLAG, DATA)
    labels = {s: data.split(s)[1].numpy() for s in ("train", "val", "test")}
    p = make_partition("dirichlet_label", labels, 4, 0.1, 0, 10, n_classes=2, dataset=FLAG, dataset_md5=data.info.md5(28))
    path = save_partition(p, tmp_path / "p.json")
    with pytest.raises(PartitionError, match=r"does not match the run: field 'lam' is 0.1 in the file but 0.5 is expected.*"
                                             r"rerun the partition step"):
        Simulation(RunConfig(dataset=FLAG, clients=4, lam=0.5, progress=False), path, DATA)
    line = cli_error(capsys, train_argv(tmp_path, {"clients": 4, "lam": 0.1}, "clients=5"))
    assert "field 'clients' is 4 in the file but 5 is expected" in line
