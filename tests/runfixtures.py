"""Hand-made run JSONs in the engine's format (fedmic-run/2) with known values, for the report
tests: every number a table or figure prints is chosen here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedmic.config import RunConfig


def run_config(method: str, arm: str | None = None, hp: dict | None = None, **kw) -> dict:
    """A real RunConfig's science() dict; methods the registry cannot build here reuse
    FedAvg's fields with their own name and hp."""
    base = dict(dataset="pneumoniamnist", lam=0.1, clients=3, rounds=4, last_k=2, progress=False)
    base.update(kw)
    base.setdefault("partition_seed", base.get("seed", 0))  # as the workflow: a seed, a partition
    if method in ("fedavg", "fedmic"):
        return RunConfig(method=method, arm=arm, hp=hp or {}, **base).science()
    cfg = RunConfig(method="fedavg", **base).science()
    cfg.update(method=method, arm=arm or method, hp=dict(hp or {}))
    return cfg


def prior_floors(train: list[list[int]], test: list[list[int]], n_classes: int = 2) -> dict:
    """Floors of a hand-made partition, worked out the way docs/method.md defines them: each
    client outputs its training label distribution (ACC: its majority class; per-client AUC
    0.5 from constant scores, on clients with two test classes)."""
    n = [len(t) for t in test]
    hits_prior = [sum(y == int(np.bincount(tr, minlength=n_classes).argmax()) for y in te)
                  for tr, te in zip(train, test)]
    major = int(np.bincount(sum(train, []), minlength=n_classes).argmax())
    with_auc = [len(set(te)) >= 2 for te in test]
    f1 = []
    for tr, te in zip(train, test):
        pred = int(np.bincount(tr, minlength=n_classes).argmax())
        per = [2 * sum(y == c == pred for y in te) / (sum(y == c for y in te) + len(te) * (c == pred))
               for c in sorted(set(te))]
        f1.append(float(np.mean(per)))
    return {"local_majority_acc": sum(hits_prior) / sum(n),
            "global_majority_acc": sum(sum(y == major for y in te) for te in test) / sum(n),
            "client_prior_acc": sum(hits_prior) / sum(n),
            "client_prior_auc": 0.5 if any(with_auc) else None,
            "client_prior_f1": float(np.average(f1, weights=n)),
            "client_prior_auc_pooled": 0.8,  # what pooling rewards; only printed, never derived
            "auc_clients": sum(with_auc), "clients": len(test)}


DEFAULT_FLOORS = {"local_majority_acc": 0.6, "global_majority_acc": 0.55, "client_prior_acc": 0.6,
                  "client_prior_auc": 0.5, "client_prior_f1": 0.4, "client_prior_auc_pooled": 0.85,
                  "auc_clients": 2, "clients": 3}


def write_run(folder: Path, name: str, *, method: str = "fedavg", arm: str | None = None, hp: dict | None = None,
              accs=(0.5, 0.6, 0.7, 0.8), acc: float = 0.8, auc: float | None = 0.9, f1: float = 0.7,
              auc_pooled: float = 0.95, client_acc=None, gaccs=None, up=(1000, 1000), down=(500, 500),
              floors: dict | None = None, ranks: dict | None = None, params=(100, None), timing=None,
              rss: float = 512.0, valsel_acc: float | None = None, acc_std: float = 0.1,
              worst: float = 0.4, val_accs=None, **cfg_kw) -> Path:
    """One run: accs[i] is the personalised test ACC of round i+1, gaccs[i] the global one
    (None: no global model), val_accs[i] the personalised validation ACC (default: accs); each
    round moves sum(up) + sum(down) bytes; the summary reports acc/auc/f1 and client_acc per client."""
    cfg = run_config(method, arm, hp, **cfg_kw)
    k = cfg["clients"]
    client_acc = list(client_acc) if client_acc is not None else [acc] * k
    history = []
    for i, a in enumerate(accs, start=1):
        pers = {"acc": a, "acc_mean": a, "acc_std": acc_std, "acc_worst_decile": worst, "auc": 0.5 + a / 2,
                "auc_mean": 0.5 + a / 2, "auc_pooled": auc_pooled, "auc_clients": 2, "f1": a,
                "per_client_acc": [a] * k, "per_client_auc": [0.5 + a / 2] * (k - 1) + [None],
                "per_client_f1": [a] * k, "n": 100}
        ev = {"personal": {"test": pers, "val": {**pers, "n": 50,
                                                 **({"acc": val_accs[i - 1]} if val_accs is not None else {})}}}
        if gaccs is not None:
            g = {"acc": gaccs[i - 1], "auc": 0.8, "f1": 0.6, "n": 1000}
            ev["global"] = {"test": g, "val": {**g, "n": 500}}
        h = {"round": i, "sampled": list(range(len(up))), "dropped": [], "skipped": [], "aggregated": len(up),
             "uplink_bytes": list(up), "downlink_bytes": list(down), "train_loss": 1.0 / i,
             "upload_ranks": {}, "broadcast_ranks": {}, "eval": ev}
        if ranks:
            h["upload_ranks"] = {layer: float(r[i - 1]) for layer, r in ranks.items()}
            h["broadcast_ranks"] = {layer: int(r[i - 1]) - 1 for layer, r in ranks.items()}
        history.append(h)
    personal = {"acc": acc, "auc": auc, "f1": f1, "acc_mean": acc, "acc_std": acc_std,
                "acc_worst_decile": worst, "auc_mean": auc, "auc_pooled": auc_pooled, "auc_clients": 2}
    n = len(accs)
    summary = {"uplink_per_round": float(sum(up)), "downlink_per_round": float(sum(down)),
               "uplink_total": sum(up) * n, "downlink_total": sum(down) * n, "dropped_total": 0,
               "skipped_total": 0, "personal": personal,
               "personal_per_client": {"acc": client_acc, "auc": [auc] * k, "f1": [f1] * k},
               "personal_valsel": {**personal, "acc": valsel_acc if valsel_acc is not None else acc, "round": n}}
    if gaccs is not None:
        g = float(np.mean(gaccs[-cfg["last_k"]:]))
        summary["global"] = {"acc": g, "auc": 0.8, "f1": 0.6}
        summary["global_valsel"] = {"acc": g, "auc": 0.8, "f1": 0.6, "round": 1}
    p = {"shared": params[0], **({"personal": params[1]} if params[1] is not None else {})}
    run = {"format": "fedmic-run/2", "config": cfg,
           "env": {"device": "cpu", "torch": "2.13.0", "fedmic": "0.2.0", "python": "3.11"},
           "partition": {"file": "p.json", "redraws": 0}, "floors": dict(floors or DEFAULT_FLOORS),
           "n_train": [50] * k, "n_test": [20] * k, "history": history, "summary": summary, "params": p}
    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(run))
    if timing is not False:
        rounds = [{"round": i, "train_s": t, "eval_s": 0.1} for i, t in enumerate(timing or [1.0] * n, start=1)]
        path.with_suffix(".timing.json").write_text(json.dumps({"rounds": rounds, "peak_rss_mb": rss, "env": {}}))
    return path
