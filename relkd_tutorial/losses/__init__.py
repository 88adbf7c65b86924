"""One module per method; each holds pure loss functions plus a thin ``nn.Module`` where needed.

- :mod:`.kd`: Hinton KD (pointwise on the class distribution).
- :mod:`.rkd`: RKD distance and angle potentials on pooled features.
- :mod:`.grkd`: GRKD, the pairwise ranking loss on the classes.
- :mod:`.ranking`: the soft pairwise and the listwise (Plackett-Luce) ranking losses.
"""

from .grkd import GRKDLoss, grkd_loss
from .kd import KDLoss, kd_loss
from .ranking import (
    ListwiseRankLoss,
    SoftPairwiseRankLoss,
    listwise_rank_loss,
    soft_pairwise_rank_loss,
)
from .rkd import RKDLoss, rkd_angle_loss, rkd_distance_loss

__all__ = [
    "GRKDLoss",
    "KDLoss",
    "ListwiseRankLoss",
    "RKDLoss",
    "SoftPairwiseRankLoss",
    "grkd_loss",
    "kd_loss",
    "listwise_rank_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_pairwise_rank_loss",
]
