"""One module per method: pure loss functions plus a thin ``nn.Module`` where needed (``kd``,
``rkd``, ``grkd``, ``dist``, ``ranking``, ``rrd``, ``refilled``).
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

from .dist import DISTLoss, dist_inter_loss, dist_intra_loss, dist_loss
from .grkd import GRKDLoss, grkd_loss
from .kd import KDLoss, kd_loss
from .ranking import (
    ListwiseRankLoss,
    SoftPairwiseRankLoss,
    listwise_rank_loss,
    soft_pairwise_rank_loss,
)
from .refilled import (
    batch_classes,
    centre_labels,
    class_centres,
    mine_triplets,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from .rkd import RKDLoss, rkd_angle_loss, rkd_distance_loss
from .rrd import EmbeddingQueue, ProjectionHead, RRDLoss, rrd_decomposition, rrd_log_probs, rrd_loss
