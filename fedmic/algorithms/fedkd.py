"""FedKD (Wu, Wu, Lyu, Huang, Xie, Nature Communications 2022): each client keeps a private
mentor, larger than the shared mentee, and trains the two together by adaptive mutual
distillation: output KD both ways plus a hidden-state loss through one learnable projection,
every distillation term divided by CE_mentor + CE_mentee. The mentee's update is factorised by
SVD with FedKD's dynamic energy threshold; the server averages the rebuilt updates, factorises
the average and broadcasts it; clients add it to their copy of the global mentee. The mentor is
the client's personalised (evaluated) model. Differences from the authors' code:
docs/method.md, "FedKD"."""
from __future__ import annotations

from ..distill import DistillSwitches
from .base import is_number
from .mutual import MutualDistillation


class FedKD(MutualDistillation):
    name = "fedkd"
    private_name = "mentor"
    shared_projection = True
    defaults = {
        # The paper's losses are unweighted sums: L = L_task + L_distill + L_hidden.
        "alpha": 1.0,            # weight of the output (KL) distillation
        "beta": 1.0,             # weight of the hidden-state (MSE) distillation
        "tau": 1.0,              # the paper distils plain softmax outputs
        "adaptive": True,        # divide distillation terms by (CE_mentor + CE_mentee), as the paper
        "max_adaptive_weight": 10.0,  # cap of that weight (ours, as FedMIC's)
        "energy_start": 0.95,    # paper: T_start = 0.95, T_end = 0.98, linear over the rounds
        "energy_end": 0.98,
        # The paper's mentor is larger than its mentee (12 vs 4 or 2 transformer layers). Here the
        # mentor is the CNN every other method evaluates, so personalised results compare like
        # models, and the mentee is that CNN at half width (a quarter of its weights), the small
        # model that travels.
        "mentor_width": 1.0,
        "mentee_width": 0.5,
        # "delta" (the paper's): the factorised averaged update; "params": the factorised global
        # mentee itself (lossy every round, for comparison).
        "downlink": "delta",
    }

    def __init__(self, ctx):
        hp = self.hp = {**self.defaults, **ctx.hp}
        for key in ("alpha", "beta"):
            self.check_hp(key, is_number(hp[key]) and hp[key] >= 0, "a finite number >= 0")
        for key in ("tau", "mentor_width", "mentee_width", "max_adaptive_weight"):
            self.check_hp(key, is_number(hp[key]) and hp[key] > 0, "a finite number > 0")
        for key in ("energy_start", "energy_end"):
            self.check_hp(key, is_number(hp[key]) and 0 < hp[key] <= 1, "a number in (0, 1]")
        self.check_hp("energy_end", hp["energy_start"] <= hp["energy_end"],
                      f">= energy_start ({hp['energy_start']}): the threshold grows over the rounds")
        self.check_hp("adaptive", isinstance(hp["adaptive"], bool), "true or false")
        self.check_hp("downlink", hp["downlink"] in ("delta", "params"), "'delta' or 'params'")
        super().__init__(ctx, hp["mentor_width"], hp["mentee_width"],
                         DistillSwitches(rep=hp["beta"] > 0, dec=hp["alpha"] > 0, adaptive=hp["adaptive"]),
                         uplink="update", downlink="update" if hp["downlink"] == "delta" else "params",
                         factorise=True)
        self.mentor, self.mentee = self.private, self.shared
