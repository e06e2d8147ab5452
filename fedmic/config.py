"""One training run's configuration: typed, validated, hashed.

The workflow's JSON schema checks the shape of config/*.yaml; this module checks each run's
values (ranges, choices, cross-field rules) with errors that name the field and the fix, so a
run started from the command line gets the same checks as one started by Snakemake.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .methods import METHODS, HyperParameters, number_hint, resolve_hp

PARTITION_SCHEMES = ("dirichlet_label", "dirichlet_client")
# fedmic.models.build_model's architectures, named here so that checking a config needs no
# torch (the Snakefile checks every run while it builds the DAG).
MODELS = ("cnn", "cnn_bn", "resnet18")


class ConfigError(ValueError):
    pass


@dataclass
class RunConfig:
    dataset: str
    method: str = "fedavg"             # method name (fedmic.methods.METHODS)
    arm: str | None = None             # name of this variant in tables (default: method)
    hp: dict = field(default_factory=dict)  # the method's hyperparameters (its defaults fill the rest)
    # partition (docs/method.md, Partitions)
    lam: float = 0.5
    clients: int = 20
    scheme: str = "dirichlet_label"
    min_size: int = 10
    partition_seed: int = 0
    image_size: int = 28
    # training
    model: str = "cnn"
    rounds: int = 50
    join_ratio: float = 1.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    weighting: str = "samples"         # aggregation weights: client sample counts or uniform
    transport: str = "float32"         # dtype of what travels
    seed: int = 0
    # evaluation
    eval_every: int = 1
    last_k: int = 5                    # reported value: mean over the last k evaluated rounds
    # robustness
    on_nonfinite: str = "error"        # "error" stops the run; "skip" drops that client's update
    drop_rate: float = 0.0             # fraction of sampled clients whose upload is lost
    checkpoint_every: int = 5          # rounds between checkpoints (0: never)
    keep_checkpoint: bool = False
    # execution: how the numbers are computed, not which ones are meant (not in the fingerprint;
    # a checkpoint resumes under another device). device, amp and memory_format change float rounding.
    device: str = "auto"
    amp: bool = False
    # channels_last: conv weights and activations stored NHWC, 1.2-1.4x faster training on this
    # project's CPU (docs/performance.md); auto = channels_last on CPU, contiguous on CUDA
    # (not measured there). Like device and amp it changes float rounding, not the method.
    memory_format: str = "auto"
    threads: int = 1                   # torch.set_num_threads (0: torch's default, one per core);
    # 1: the most images per CPU-second, and jobs fill the cores (docs/performance.md, "Threads")
    progress: bool = True              # a log line per round (fedmic/watch.py)

    EXECUTION_FIELDS = ("device", "amp", "memory_format", "threads", "progress", "checkpoint_every", "keep_checkpoint")

    def __post_init__(self):
        if self.arm is None:
            self.arm = self.method
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str):
            if not cond:
                raise ConfigError(msg)

        # Types first: a string where a number belongs would otherwise surface as a TypeError
        # traceback from a comparison below.
        kinds = {"int": numbers.Integral, "float": numbers.Real, "bool": bool, "str": str, "dict": dict}
        for f in fields(self):
            v, want = getattr(self, f.name), kinds.get(f.type)
            if type(v).__module__ == "numpy" and hasattr(v, "item"):  # np.int64 from a grid: make it JSON-able
                v = v.item()
                setattr(self, f.name, v)
            if want is not None and (not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool")):
                hint = number_hint(v) if f.type == "float" else ""
                raise ConfigError(f"{f.name} must be {'a number' if f.type == 'float' else f'of type {f.type}'}, "
                                  f"got {v!r} ({type(v).__name__}){hint}")
            need(f.type != "float" or math.isfinite(v), f"{f.name} must be a finite number, got {v!r}")

        need(self.method in METHODS, f"unknown method {self.method!r}; choose one of: {', '.join(sorted(METHODS))}")
        need(self.model in MODELS, f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        need(self.scheme in PARTITION_SCHEMES, f"unknown partition scheme {self.scheme!r}; choose one of: {', '.join(PARTITION_SCHEMES)}")
        need(self.lam > 0, f"lam (Dirichlet concentration) must be > 0, got {self.lam}")
        need(self.clients >= 1, f"clients must be >= 1, got {self.clients}")
        need(0 < self.join_ratio <= 1, f"join_ratio must be in (0, 1], got {self.join_ratio}")
        need(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        need(self.local_epochs >= 1, f"local_epochs must be >= 1, got {self.local_epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(self.last_k >= 1, f"last_k must be >= 1, got {self.last_k}")
        need(self.image_size in (28, 64, 128, 224), f"image_size must be one of 28, 64, 128, 224, got {self.image_size}")
        need(self.weighting in ("samples", "uniform"), f"weighting must be 'samples' or 'uniform', got {self.weighting!r}")
        need(self.transport in ("float32", "float16"), f"transport must be 'float32' or 'float16', got {self.transport!r}")
        need(self.on_nonfinite in ("error", "skip"), f"on_nonfinite must be 'error' or 'skip', got {self.on_nonfinite!r}")
        need(0 <= self.drop_rate < 1, f"drop_rate must be in [0, 1), got {self.drop_rate}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        need(self.memory_format in ("auto", "channels_last", "contiguous"),
             f"memory_format must be auto, channels_last or contiguous, got {self.memory_format!r}")
        need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        need(self.threads >= 0, f"threads must be >= 0 (0: torch's default), got {self.threads}")
        try:
            full = resolve_hp(self.method, self.hp, self.to_dict())
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # the given values as the declaration normalises them (tau: 4 -> 4.0: the same run either way)
        self.hp = {k: getattr(full, k) for k in self.hp}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a run config is a mapping of key: value (e.g. dataset: breastmnist), got {d!r}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown run config key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def without_execution(self) -> dict:
        """The settings that make the run what it is (hp as given); see `science` for the full hp."""
        d = self.to_dict()
        for k in self.EXECUTION_FIELDS:
            d.pop(k)
        return d

    def execution_args(self, **override) -> list[str]:
        """The execution settings as `fedmic train` flags (--checkpoint-every 5, --no-amp, ...)."""
        args = []
        for k in self.EXECUTION_FIELDS:
            v, flag = override.get(k, getattr(self, k)), "--" + k.replace("_", "-")
            args += [flag if v else f"--no-{flag[2:]}"] if isinstance(v, bool) else [flag, str(v)]
        return args

    def resolved_hp(self) -> HyperParameters:
        """The method's full hyperparameters, typed and frozen: what its algorithm is built with."""
        return resolve_hp(self.method, self.hp, self.to_dict())

    def science(self) -> dict:
        """Everything that determines the numbers: the method's full hyperparameters included."""
        return {**self.without_execution(), "hp": self.resolved_hp().to_dict()}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.science(), sort_keys=True).encode()).hexdigest()[:16]


def load_run_config(spec: str, overrides: list[str], **settings) -> RunConfig:
    """A run config from a file or inline JSON, then `--set KEY=VALUE` overrides and flags
    (`settings`, None: not given), all checked together by RunConfig."""
    if spec.lstrip().startswith("{"):
        try:
            d = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config: inline JSON is malformed ({e})") from None
    else:
        if Path(spec).is_dir():
            raise ConfigError(f"--config {spec} is a folder; give a YAML/JSON run config file or an inline JSON object")
        with open(spec) as f:  # a stream, so a YAML error names the file
            d = yaml.safe_load(f)
        if d is None:
            raise ConfigError(f"config file {spec} is empty; write the run's settings in it as key: value lines "
                              "(at least dataset: NAME), or pass --config '{\"dataset\": ...}'")
    if not isinstance(d, dict):
        raise ConfigError(f"config {spec} must be a mapping of key: value (e.g. dataset: breastmnist), got {d!r}")
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE (e.g. --set lr=0.01 or --set hp.tau=4)")
        target = d
        *path, last = key.split(".")
        for p in path:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a mapping in the config")
        target[last] = yaml.safe_load(value)
    d.update({k: v for k, v in settings.items() if v is not None})
    return RunConfig.from_dict(d)
