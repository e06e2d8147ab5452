"""What a long run shows while it trains: one log line per round (the `progress` setting) and,
when asked, the same values as TensorBoard scalars. Neither changes what the run computes or
writes to its JSON."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .config import ConfigError, RunConfig

log = logging.getLogger("fedmic.engine")

TENSORBOARD_FIX = "pip install 'fedmic[tensorboard]'"
WHO = ("personal", "global")


def round_scalars(rec: dict, seconds: float) -> dict[str, float]:
    """A round's values by TensorBoard tag: its wall time (training and evaluation), the bytes
    its sampled clients sent and received, their mean training loss and, on evaluated rounds,
    the test ACC of the personalised models and of the global model (when the method has one)."""
    out = {"time/round_s": seconds, "bytes/uplink": sum(rec["uplink_bytes"]),
           "bytes/downlink": sum(rec["downlink_bytes"])}
    if rec["train_loss"] is not None:
        out["loss/train"] = rec["train_loss"]
    for who in WHO:
        test = rec.get("eval", {}).get(who, {}).get("test")
        if test is not None:
            out[f"acc/{who}_test"] = test["acc"]
    return out


def tensorboard_missing() -> str | None:
    """What to install when TensorBoard cannot be imported, else None (cheap: torch stays unloaded)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as e:
        return f"the tensorboard package cannot be imported ({e}): {TENSORBOARD_FIX}"
    return None


def summary_writer_class():
    """torch's SummaryWriter, or one line saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(f"--tensorboard needs the tensorboard package ({e}): {TENSORBOARD_FIX}") from None
    return SummaryWriter


class RoundWatch:
    """Reports each finished round. A resumed run carries its last evaluation over from the
    checkpoint's history; its TensorBoard events from the resumed round on replace any an
    earlier attempt wrote (purge_step), so each round keeps one value per scalar."""

    def __init__(self, cfg: RunConfig, history: list[dict], start_round: int, tensorboard: str | Path | None = None):
        self.cfg = cfg
        self.acc: dict[str, float] = {}  # who -> test ACC at the latest evaluation
        self.evaluated: int | None = None  # that evaluation's round
        for rec in history:
            self._note(rec)
        self.writer = None
        if tensorboard is not None:
            self.writer = summary_writer_class()(str(tensorboard), purge_step=start_round)

    def _note(self, rec: dict) -> None:
        if "eval" in rec:
            self.evaluated = rec["round"]
            self.acc = {who: rec["eval"][who]["test"]["acc"] for who in WHO if who in rec["eval"]}

    def line(self, rec: dict, seconds: float) -> str:
        """round 3/30: 4.2 s, test ACC personal 0.8123 global 0.7710 (round 2), MB up 0.075 down 0.151
        (the latest evaluation's ACC and, when older, its round; MB = 10^6 bytes, as in the tables)."""
        rnd = rec["round"]
        acc = " ".join(f"{who} {_acc(self.acc[who]) if who in self.acc else '-'}" for who in WHO)
        when = f" (round {self.evaluated})" if self.evaluated not in (None, rnd) else ""
        s = round_scalars(rec, seconds)
        return (f"round {rnd}/{self.cfg.rounds}: {seconds:.1f} s, test ACC {acc}{when}, "
                f"MB up {s['bytes/uplink'] / 1e6:.3f} down {s['bytes/downlink'] / 1e6:.3f}")

    def round_done(self, rec: dict, seconds: float) -> None:
        self._note(rec)
        if self.cfg.progress:
            log.info("%s", self.line(rec, seconds))
        if self.writer is not None:
            for tag, value in round_scalars(rec, seconds).items():
                self.writer.add_scalar(tag, value, global_step=rec["round"])
            self.writer.flush()  # a live TensorBoard sees each round as it ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _acc(v) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
