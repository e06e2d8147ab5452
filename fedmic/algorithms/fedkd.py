"""FedKD (Wu, Wu, Lyu, Huang, Xie, Nature Communications 2022): each client keeps a private
teacher (the paper's mentor), larger than the shared student (its mentee), and trains the two
together by adaptive mutual distillation: output KD both ways plus a hidden-state loss through
one learnable map A_TS, every distillation term divided by CE_teacher + CE_student. The
student's update is factorised by SVD with FedKD's dynamic energy threshold; the server
averages the rebuilt updates, factorises the average and broadcasts it; clients add it to their
copy of the global student. The teacher is the client's personalised (evaluated) model. The
hyperparameters keep the paper's names (mentor_width, mentee_width). Differences from the
authors' code: docs/method.md, "FedKD"."""
from __future__ import annotations

from ..distill import DistillSwitches
from ..methods import ENERGY_RULE, Method, adaptive_weight, choice, energy_schedule, log_range, number, one_of
from .mutual import MutualDistillation

METHOD = Method("fedkd", "FedKD", "FedKD", personalised=True, factorised=True, hps=(
    number("alpha", 1.0, "weight of the output (KL) distillation", space=log_range(0.1, 10.0), ge=0),
    number("beta", 1.0, "weight of the hidden-state (MSE) distillation", space=log_range(0.1, 10.0), ge=0),
    number("tau", 1.0, "distillation temperature (the paper distils plain softmax outputs)",
           space=one_of(1.0, 2.0, 4.0), gt=0),
    *adaptive_weight(),
    *energy_schedule("SVD energy threshold of round 1 (FedKD's T_start)"),
    number("mentor_width", 1.0, "width multiplier of the private mentor", gt=0),
    number("mentee_width", 0.5, "width multiplier of the shared mentee", gt=0),
    choice("downlink", "delta", ("delta", "params"),
           "what the server broadcasts: the factorised global update (the paper's) or the factorised global mentee"),
), rules=(ENERGY_RULE,))


class FedKD(MutualDistillation):
    method = METHOD
    one_representation_map = True

    def __init__(self, ctx, hp):
        # The paper's mentor is larger than its mentee (12 vs 4 or 2 transformer layers). Here the
        # mentor is the CNN every other method evaluates (mentor_width 1), so personalised results
        # compare like models, and the mentee that travels is that CNN at half width.
        super().__init__(ctx, hp, hp.mentor_width, hp.mentee_width,
                         DistillSwitches(rep=hp.beta > 0, dec=hp.alpha > 0, adaptive=hp.adaptive),
                         uplink="update", downlink="update" if hp.downlink == "delta" else "params",
                         factorise=True)
