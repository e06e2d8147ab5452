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
from ..methods import resolve_hp
from .mutual import MutualDistillation


class FedKD(MutualDistillation):
    name = "fedkd"
    private_name = "mentor"
    shared_projection = True

    def __init__(self, ctx):
        hp = resolve_hp(self.name, ctx.hp)  # declared in fedmic/methods.py
        # The paper's mentor is larger than its mentee (12 vs 4 or 2 transformer layers). Here the
        # mentor is the CNN every other method evaluates (mentor_width 1), so personalised results
        # compare like models, and the mentee that travels is that CNN at half width.
        super().__init__(ctx, hp["mentor_width"], hp["mentee_width"],
                         DistillSwitches(rep=hp["beta"] > 0, dec=hp["alpha"] > 0, adaptive=hp["adaptive"]),
                         uplink="update", downlink="update" if hp["downlink"] == "delta" else "params",
                         factorise=True)
        self.mentor, self.mentee = self.private, self.shared
