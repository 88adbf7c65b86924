"""One module per method; each holds pure loss functions plus a thin ``nn.Module`` where needed."""

# --- RRD and REFILLED (embedding-based relational losses) ---
from .refilled import (
    batch_classes,
    class_centres,
    mine_triplets,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from .rrd import (
    EmbeddingQueue,
    ProjectionHead,
    RRDLoss,
    rrd_decomposition,
    rrd_log_probs,
    rrd_loss,
)

__all__ = [
    # RRD
    "EmbeddingQueue",
    "ProjectionHead",
    "RRDLoss",
    "rrd_decomposition",
    "rrd_log_probs",
    "rrd_loss",
    # REFILLED
    "batch_classes",
    "class_centres",
    "mine_triplets",
    "refilled_classifier_kl",
    "refilled_embedding_loss",
]
