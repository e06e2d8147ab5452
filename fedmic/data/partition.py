"""Client partitions of a MedMNIST dataset (docs/method.md, Partitions).

A partition assigns every image of the official train, val and test splits to
exactly one client; the splits are never merged. Two schemes:

* ``dirichlet_label``: for each class c, p_c ~ Dir(lam * 1_K) over the K clients,
  and the same p_c cuts the class-c images of every split, so a client's local
  val/test sets follow its own label distribution.
* ``dirichlet_client``: each client draws class proportions q_i ~ Dir(lam * 1_C)
  and a fixed number of training images is sampled without replacement; it always
  terminates, which the first scheme cannot promise on few-class datasets.

A partition depends only on (dataset, scheme, lam, clients, seed, min_size), never
on the method, and is stored as its own JSON file (``save_partition``). The file proves
itself: it carries a digest of its settings and indices, and every load checks the digest,
the index ranges, the split sizes and that every client has a training image. A user's own
indices become a partition through ``stamp`` (``fedmic stamp-partition``), marked custom.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..utils import atomic_write_text

FORMAT = "fedmic-partition/2"
SCHEMES = ("dirichlet_label", "dirichlet_client")
# Fixed processing order so the generator is consumed identically on every run.
SPLIT_ORDER = ("train", "val", "test")
EXPECT_KEYS = ("dataset", "scheme", "lam", "clients", "seed", "min_size", "dataset_md5")


class PartitionError(ValueError):
    """A partition cannot be built, or a stored one is unusable."""


@dataclass
class Partition:
    dataset: str
    scheme: str
    lam: float
    clients: int
    seed: int
    min_size: int
    dataset_md5: str
    n_classes: int
    indices: dict[str, list[np.ndarray]]
    redraws: int = 0
    # images per split in the source dataset, so a loader can check completeness
    n_images: dict[str, int] = field(default_factory=dict)
    # scheme-specific settings (max_tries, client_sizes), kept for provenance
    extra: dict[str, Any] = field(default_factory=dict)
    # indices given by a user (fedmic stamp-partition), not drawn by a scheme
    custom: bool = False

    @property
    def splits(self) -> list[str]:
        return _ordered_splits(self.indices)

    def sizes(self, split: str) -> np.ndarray:
        """Number of images of each client in ``split``."""
        return np.array([len(ix) for ix in self._split(split)], dtype=np.int64)

    def counts(self, split: str, labels: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """(clients x classes) image counts of ``split``.

        ``labels`` is that split's label array or the dict split -> labels.
        """
        y = labels[split] if isinstance(labels, Mapping) else labels
        y = _as_label_vector(y, split)
        out = np.zeros((self.clients, self.n_classes), dtype=np.int64)
        for i, ix in enumerate(self._split(split)):
            if len(ix):
                out[i] = np.bincount(y[ix], minlength=self.n_classes)[: self.n_classes]
        return out

    def _split(self, split: str) -> list[np.ndarray]:
        if split not in self.indices:
            raise KeyError(f"partition has no split {split!r} (has {self.splits})")
        return self.indices[split]

    def to_dict(self) -> dict[str, Any]:
        body = self._body()
        indices = body.pop("indices")
        return {**body, "digest": content_digest(body | {"indices": indices}), "indices": indices}

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "scheme": self.scheme,
            "lam": float(self.lam),
            "clients": int(self.clients),
            "seed": int(self.seed),
            "min_size": int(self.min_size),
            "dataset_md5": self.dataset_md5,
            "n_classes": int(self.n_classes),
            "redraws": int(self.redraws),
            "n_images": {k: int(v) for k, v in self.n_images.items()},
            "extra": _jsonable(self.extra),
            "custom": bool(self.custom),
            "indices": {
                s: [[int(v) for v in ix] for ix in self.indices[s]] for s in self.splits
            },
        }

    @property
    def digest(self) -> str:
        """sha256 of the settings and indices: what the file records, the run JSON and the
        checkpoint carry, and every load compares."""
        return content_digest(self._body())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "partition dict", digest: bool = True) -> "Partition":
        """Rebuild and check a partition; any inconsistency raises PartitionError. digest=False:
        indices that have no digest yet (stamp)."""
        if not isinstance(d, Mapping):
            raise PartitionError(f"{source}: expected a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise PartitionError(
                f"{source}: format is {fmt!r}, this fedmic reads {FORMAT!r}"
                + (" (an older fedmic made it, without the digest every load checks)"
                   if str(fmt).startswith("fedmic-partition/") else "")
            )
        required = ("dataset", "scheme", "lam", "clients", "seed", "min_size",
                    "dataset_md5", "n_classes", "n_images", "indices", *(("digest",) if digest else ()))
        missing = [k for k in required if k not in d]
        if missing:
            raise PartitionError(f"{source}: missing field(s) {missing}")
        try:
            clients = int(d["clients"])
            n_classes = int(d["n_classes"])
            n_images = {str(k): int(v) for k, v in dict(d.get("n_images", {})).items()}
            indices: dict[str, list[np.ndarray]] = {}
            for split, lists in dict(d["indices"]).items():
                if len(lists) != clients:
                    raise PartitionError(
                        f"{source}: split {split!r} has {len(lists)} clients, header says {clients}"
                    )
                indices[str(split)] = [np.sort(np.asarray(ix, dtype=np.int64)) for ix in lists]
            part = cls(
                dataset=str(d["dataset"]), scheme=str(d["scheme"]), lam=float(d["lam"]),
                clients=clients, seed=int(d["seed"]), min_size=int(d["min_size"]),
                dataset_md5=str(d["dataset_md5"]), n_classes=n_classes, indices=indices,
                redraws=int(d.get("redraws", 0)), n_images=n_images,
                extra=dict(d.get("extra", {})), custom=bool(d.get("custom", False)),
            )
        except PartitionError:
            raise
        except (TypeError, ValueError, KeyError) as e:
            raise PartitionError(f"{source}: malformed partition ({e})") from e
        part.check(source)
        if digest and d["digest"] != part.digest:
            raise PartitionError(f"{source} was changed after it was made: its digest does not match its settings "
                                 "and indices")
        return part

    def check(self, source: str) -> None:
        """The indices fit the split sizes, no image has two clients, every client trains."""
        for split in SPLIT_ORDER:
            if split not in self.indices:
                raise PartitionError(f"{source}: no {split!r} split")
        for split, lists in self.indices.items():
            n = self.n_images.get(split)
            if n is None:
                raise PartitionError(f"{source}: no image count (n_images) for split {split!r}")
            allix = np.concatenate(lists) if lists else np.zeros(0, np.int64)
            if len(np.unique(allix)) != len(allix):
                raise PartitionError(f"{source}: split {split!r} gives an image to two clients")
            for cid, ix in enumerate(lists):
                if len(ix) and (ix.min() < 0 or ix.max() >= n):
                    bad = int(ix.min() if ix.min() < 0 else ix.max())
                    raise PartitionError(f"{source}: client {cid} has index {bad} in split {split!r}, "
                                         f"outside [0, {n}) (the split has {n} images)")
        for cid, ix in enumerate(self.indices["train"]):
            if len(ix) < max(1, self.min_size):
                raise PartitionError(f"{source}: client {cid} has {len(ix)} training images, fewer than min_size "
                                     f"{self.min_size}" + (" (a client needs a training image)" if not len(ix) else ""))


# --------------------------------------------------------------------------- helpers


def content_digest(d: Mapping[str, Any]) -> str:
    body = {k: v for k, v in d.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def image_size_of(dataset: str, dataset_md5: str) -> int | None:
    """The image size whose file has this MD5 (None: not a registered file)."""
    from .registry import DATASETS
    return next((int(s) for s, m in DATASETS.get(dataset, {}).get("md5", {}).items() if m == dataset_md5), None)


def partition_command(d: Mapping[str, Any], path: str | Path, root: str | Path | None = None) -> str | None:
    """The `fedmic partition` command that makes this partition file again (None: a custom
    partition, or a file too damaged to say)."""
    try:
        if d.get("custom"):
            return None
        size = image_size_of(str(d["dataset"]), str(d.get("dataset_md5")))
        where = [f"--root {shlex.quote(str(root))}"] if root else []
        args = [f"--dataset {d['dataset']}", f"--size {size or 28}", *where,
                f"--scheme {d['scheme']}", f"--lam {float(d['lam'])!r}", f"--clients {int(d['clients'])}",
                f"--seed {int(d['seed'])}", f"--min-size {int(d['min_size'])}", f"--out {shlex.quote(str(path))}"]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return "fedmic partition " + " ".join(args)


def _ordered_splits(keys) -> list[str]:
    keys = list(keys)
    return [s for s in SPLIT_ORDER if s in keys] + sorted(s for s in keys if s not in SPLIT_ORDER)


def _as_label_vector(y: np.ndarray, split: str = "?") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"labels of split {split!r} have shape {y.shape}; partitions need one class per "
            "image (shape (N,) or (N, 1)); multi-label datasets are not supported"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"labels of split {split!r} are not integer class ids")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"labels of split {split!r} contain negative class ids")
    return y


def label_vectors(labels: Mapping[str, np.ndarray], n_classes: int | None = None
                  ) -> tuple[dict[str, np.ndarray], int]:
    """Flatten every split's labels to int64 vectors and settle the class count."""
    if not isinstance(labels, Mapping) or "train" not in labels:
        raise ValueError("labels must be a dict split -> array with at least a 'train' split")
    ys = {s: _as_label_vector(labels[s], s) for s in _ordered_splits(labels)}
    top = max((int(y.max()) + 1 for y in ys.values() if y.size), default=0)
    if n_classes is None:
        n_classes = top
    elif top > n_classes:
        raise ValueError(f"labels contain class id {top - 1} but n_classes is {n_classes}")
    if n_classes < 1:
        raise ValueError("labels are empty: no classes to partition")
    return ys, int(n_classes)


def label_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Images per class of one label vector."""
    return np.bincount(_as_label_vector(y), minlength=n_classes)[:n_classes].astype(np.int64)


def _check_common(ys: Mapping[str, np.ndarray], n_clients, lam, min_size) -> None:
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ValueError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if not (isinstance(lam, (int, float, np.floating, np.integer)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam (Dirichlet concentration) must be a finite number > 0, got {lam!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1 (every client needs a training image), got {min_size!r}")
    n_train = len(ys["train"])
    if n_clients * min_size > n_train:
        raise ValueError(
            f"more clients than images allow: {n_clients} clients x min_size {min_size} = "
            f"{n_clients * min_size} > {n_train} training images; use fewer clients or a "
            "smaller min_size"
        )


def _floor_cuts(n: int, p: np.ndarray) -> np.ndarray:
    """Per-client counts when n items are cut at floor(n * cumsum(p)).

    Each count differs from n * p_i by less than 1 and the counts sum to n.
    """
    cum = np.cumsum(p, dtype=np.float64)
    cum = cum / cum[-1]  # guards against sums of 1 - 1e-16 leaving the last image out
    ends = np.floor(cum * n).astype(np.int64)
    ends[-1] = n
    ends = np.clip(ends, 0, n)
    return np.diff(np.concatenate(([0], ends)))


def _split_by_counts(idx: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(idx, np.cumsum(counts)[:-1])


def _dirichlet(rng: np.random.Generator, alpha: float, k: int, size: int) -> np.ndarray:
    if k == 1:
        return np.ones((size, 1))
    return rng.dirichlet(np.full(k, float(alpha)), size=size)


def _assemble(per_client: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
            for parts in per_client]


# --------------------------------------------------------------------------- schemes


def dirichlet_partition(
    labels: Mapping[str, np.ndarray],
    n_clients: int,
    lam: float,
    seed: int,
    min_size: int = 10,
    max_tries: int = 100,
    n_classes: int | None = None,
    *,
    dataset: str = "",
    dataset_md5: str = "",
) -> Partition:
    """Dirichlet label skew, scheme ``dirichlet_label``.

    Draws p_c ~ Dir(lam * 1_K) for every class; the same p_c cuts class c in every
    split. All p_c are redrawn until every client has >= min_size training images,
    at most ``max_tries`` draws in all, else PartitionError.
    """
    ys, n_classes = label_vectors(labels, n_classes)
    _check_common(ys, n_clients, lam, min_size)
    if isinstance(max_tries, bool) or not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise ValueError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    K, C = int(n_clients), n_classes
    rng = np.random.default_rng(seed)
    n_train_c = label_counts(ys["train"], C)

    best_min = -1
    for attempt in range(int(max_tries)):
        P = _dirichlet(rng, lam, K, C)  # row c = p_c over the clients
        if not np.all(np.isfinite(P)):
            continue  # gamma underflow at tiny lam; counts as a failed try
        sizes = sum(_floor_cuts(int(n_train_c[c]), P[c]) for c in range(C))
        smallest = int(np.min(sizes))
        best_min = max(best_min, smallest)
        if smallest >= min_size:
            break
    else:
        where = f" on {dataset}" if dataset else ""
        raise PartitionError(
            f"dirichlet_label partition{where} failed: after {max_tries} draws of "
            f"p_c ~ Dir({lam:g} * 1_K) with K={K} clients, the smallest client had at best "
            f"{max(best_min, 0)} training images, below min_size={min_size} "
            f"({C} classes, {len(ys['train'])} training images). Fix: lower min_size, use "
            "fewer clients or a larger lam, or use scheme 'dirichlet_client' (per-client "
            "class proportions with fixed client sizes, which always succeeds)."
        )

    indices: dict[str, list[np.ndarray]] = {}
    for split, y in ys.items():
        per_client: list[list[np.ndarray]] = [[] for _ in range(K)]
        for c in range(C):
            idx = rng.permutation(np.flatnonzero(y == c))
            for i, part in enumerate(_split_by_counts(idx, _floor_cuts(len(idx), P[c]))):
                per_client[i].append(part)
        indices[split] = _assemble(per_client)

    return Partition(
        dataset=dataset, scheme="dirichlet_label", lam=float(lam), clients=K, seed=int(seed),
        min_size=int(min_size), dataset_md5=dataset_md5, n_classes=C, indices=indices,
        redraws=attempt, n_images={s: len(y) for s, y in ys.items()},
        extra={"max_tries": int(max_tries)},
    )


def _largest_remainder(total: int, w: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to weights ``w``."""
    w = np.asarray(w, dtype=np.float64)
    if total <= 0:
        return np.zeros(len(w), np.int64)
    w = w / w.sum()
    raw = w * total
    base = np.floor(raw).astype(np.int64)
    short = total - int(base.sum())
    if short > 0:
        # stable order: ties go to the lower class id
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:short]] += 1
    return base


def _draw_counts(q: np.ndarray, size: int, avail: np.ndarray) -> np.ndarray:
    """Per-class counts for one client: ~size*q, capped by what is left.

    A shortfall is retaken from classes that still have images, in proportion to q
    renormalised over them. Each pass either finishes or empties a class, so at most
    C passes are needed.
    """
    take = np.zeros(len(q), np.int64)
    need = int(size)
    left = avail.astype(np.int64).copy()
    for _ in range(len(q) + 1):
        if need <= 0:
            break
        open_ = left > 0
        if not open_.any():
            break
        w = np.where(open_, q, 0.0)
        if w.sum() <= 0:  # q has no mass where images remain
            w = open_.astype(np.float64)
        want = np.minimum(_largest_remainder(need, w), left)
        if want.sum() == 0:
            # rounding gave nothing to any open class: take one image from the best one
            want[np.argmax(np.where(open_, w, -1.0))] = 1
        take += want
        left -= want
        need -= int(want.sum())
    return take


def client_dirichlet_partition(
    labels: Mapping[str, np.ndarray],
    n_clients: int,
    lam: float,
    seed: int,
    min_size: int = 10,
    client_sizes: Sequence[int] | None = None,
    n_classes: int | None = None,
    *,
    dataset: str = "",
    dataset_md5: str = "",
) -> Partition:
    """Per-client class proportions, scheme ``dirichlet_client``.

    q_i ~ Dir(lam * 1_C) for each client; client i gets ``client_sizes[i]`` training
    images (default floor(N_train / K) each) sampled without replacement. A client
    holding a fraction f_ic of the assigned class-c training images gets about f_ic
    of the class-c val and test images. Always terminates.
    """
    ys, n_classes = label_vectors(labels, n_classes)
    _check_common(ys, n_clients, lam, min_size)
    K, C = int(n_clients), n_classes
    n_train = len(ys["train"])
    if client_sizes is None:
        sizes = np.full(K, n_train // K, dtype=np.int64)
    else:
        sizes = np.asarray(client_sizes)
        if sizes.shape != (K,) or not np.issubdtype(sizes.dtype, np.integer):
            raise ValueError(f"client_sizes must be {K} integers, got {client_sizes!r}")
        sizes = sizes.astype(np.int64)
        if sizes.min() < min_size:
            raise ValueError(f"client_sizes must all be >= min_size={min_size}, got {sizes.tolist()}")
        if sizes.sum() > n_train:
            raise ValueError(
                f"client_sizes sum to {int(sizes.sum())} but there are only {n_train} training images"
            )
    rng = np.random.default_rng(seed)
    Q = _dirichlet(rng, lam, C, K)
    bad = ~np.all(np.isfinite(Q), axis=1)
    Q[bad] = 1.0 / C  # gamma underflow at tiny lam: fall back to uniform for that client

    # pool of shuffled train indices per class, consumed from the front
    pools = [rng.permutation(np.flatnonzero(ys["train"] == c)) for c in range(C)]
    used = np.zeros(C, np.int64)
    train_counts = np.zeros((K, C), np.int64)
    train_parts: list[list[np.ndarray]] = [[] for _ in range(K)]
    # random visiting order, so that the leftover-fed last clients are not always the same ids
    for i in rng.permutation(K):
        avail = np.array([len(p) for p in pools]) - used
        take = _draw_counts(Q[i], int(sizes[i]), avail)
        for c in range(C):
            if take[c]:
                train_parts[i].append(pools[c][used[c]: used[c] + take[c]])
        used += take
        train_counts[i] = take

    indices: dict[str, list[np.ndarray]] = {"train": _assemble(train_parts)}
    client_weight = train_counts.sum(axis=1).astype(np.float64)
    for split, y in ys.items():
        if split == "train":
            continue
        per_client: list[list[np.ndarray]] = [[] for _ in range(K)]
        for c in range(C):
            idx = rng.permutation(np.flatnonzero(y == c))
            f = train_counts[:, c].astype(np.float64)
            if f.sum() == 0:
                # no client trained on class c (it has < K train images left over):
                # spread it by client size so the split stays complete
                f = client_weight if client_weight.sum() > 0 else np.ones(K)
            for i, part in enumerate(_split_by_counts(idx, _floor_cuts(len(idx), f / f.sum()))):
                per_client[i].append(part)
        indices[split] = _assemble(per_client)

    return Partition(
        dataset=dataset, scheme="dirichlet_client", lam=float(lam), clients=K, seed=int(seed),
        min_size=int(min_size), dataset_md5=dataset_md5, n_classes=C, indices=indices,
        redraws=0, n_images={s: len(y) for s, y in ys.items()},
        extra={"client_sizes": sizes.tolist()} if client_sizes is not None else {},
    )


def make_partition(
    scheme: str,
    labels: Mapping[str, np.ndarray],
    n_clients: int,
    lam: float,
    seed: int,
    min_size: int = 10,
    **kw: Any,
) -> Partition:
    """Build a partition by scheme name (one of ``SCHEMES``)."""
    if scheme == "dirichlet_label":
        return dirichlet_partition(labels, n_clients, lam, seed, min_size, **kw)
    if scheme == "dirichlet_client":
        return client_dirichlet_partition(labels, n_clients, lam, seed, min_size, **kw)
    raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {SCHEMES}")


# --------------------------------------------------------------------------- files


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def save_partition(part: Partition, path: str | Path) -> Path:
    """Write ``part`` as JSON with its digest, atomically (a reader sees the old file or the
    new one)."""
    part.check(f"partition for {path}")
    d = part.to_dict()
    indices = d.pop("indices")
    # one client per line keeps the file greppable without an int per line
    lines = ["{"]
    for k, v in d.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "indices": {')
    splits = list(indices)
    for si, split in enumerate(splits):
        lines.append(f"    {json.dumps(split)}: [")
        rows = [f"      {json.dumps(ix, separators=(',', ':'))}" for ix in indices[split]]
        lines.append(",\n".join(rows))
        lines.append("    ]" + ("," if si < len(splits) - 1 else ""))
    lines.append("  }")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    return atomic_write_text(path, text)


def load_partition(path: str | Path, expect: Mapping[str, Any] | None = None,
                   root: str | Path | None = None) -> Partition:
    """Read and check a partition file; with ``expect``, refuse one made for other settings.
    ``root`` (the MedMNIST folder) goes into the command a message prints."""
    path = Path(path)
    if expect:
        unknown = set(expect) - set(EXPECT_KEYS)
        if unknown:
            raise ValueError(f"unknown expect key(s) {sorted(unknown)}; allowed: {EXPECT_KEYS}")
    wanted = partition_command(expect, path, root) if expect and set(EXPECT_KEYS) <= set(expect) else None

    def fix(command: str | None) -> str:
        again = "delete it and rerun the partition step (snakemake makes it again)"
        return f"Fix: `{command}`, or {again}" if command else f"Fix: {again}"

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        make = wanted or f"fedmic partition ... --out {path}"
        raise PartitionError(f"partition file {path} not found; make it with `{make}` "
                             "(the workflow's partition rule does) or check the path") from None
    except IsADirectoryError as e:
        raise PartitionError(f"partition file {path} cannot be read ({e}); remove or rename that folder, then "
                             "rerun the partition step") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PartitionError(f"partition file {path} cannot be read ({e}); {fix(wanted)}") from e
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise PartitionError(
            f"partition file {path} is truncated or not valid JSON ({e.msg} at line {e.lineno}); {fix(wanted)}"
        ) from e
    try:
        part = Partition.from_dict(d, source=f"partition file {path}")
    except PartitionError as e:
        if isinstance(d, Mapping) and d.get("custom"):
            raise PartitionError(f"{e}; Fix: stamp your indices again, `fedmic stamp-partition --in YOURS.json "
                                 f"--out {path}` (fedmic stamp-partition --help)") from e
        made = partition_command(d, path, root) if isinstance(d, Mapping) else None
        raise PartitionError(f"{e}; {fix(wanted or made)}") from e
    for key, want in (expect or {}).items():
        have = getattr(part, key)
        if key == "lam":
            same = math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
        elif key in ("clients", "seed", "min_size"):
            same = int(have) == int(want)
        else:
            same = str(have) == str(want)
        if not same:
            raise PartitionError(
                f"partition file {path} does not match the run: field {key!r} is {have!r} in "
                f"the file but {want!r} is expected. The file was made for other settings; {fix(wanted)}"
            )
    return part


def stamp(d: Mapping[str, Any], n_images: Mapping[str, int], n_classes: int, dataset_md5: str,
          source: str) -> Partition:
    """A user's own indices as a checked partition, marked custom. ``d`` gives the settings a
    run config matches (dataset, scheme, lam, clients, seed, min_size) and the indices of
    every split; the data gives the rest."""
    if not isinstance(d, Mapping):
        raise PartitionError(f"{source}: expected a JSON object, got {type(d).__name__}")
    need = ("dataset", "scheme", "lam", "clients", "seed", "min_size", "indices")
    missing = [k for k in need if k not in d]
    if missing:
        raise PartitionError(f"{source}: missing field(s) {missing}; a custom partition names {list(need)} "
                             "(the settings its runs use, and per split one index list per client)")
    if d["scheme"] not in SCHEMES:
        raise PartitionError(f"{source}: scheme {d['scheme']!r} is not one of {SCHEMES}; give the scheme the run "
                             "config names (the run JSON records that the indices are custom)")
    body = {**{k: d[k] for k in need}, "format": FORMAT, "dataset_md5": dataset_md5, "n_classes": int(n_classes),
            "redraws": 0, "n_images": dict(n_images), "extra": {}, "custom": True}
    return Partition.from_dict(body, source, digest=False)
