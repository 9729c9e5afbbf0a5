"""Post-training surgeons: one-shot pruning of a trained network from calibration inputs (layer.py:
the math on one layer — SparseGPT, Wanda, magnitude, N:M; obs.py: blocked OBS from gradients; model.py: a
whole network, layer by layer)."""
from lth.surgeons import obs  # noqa: F401  (lth.surgeons.obs: OBS / WoodFisher / oBERT)
from lth.surgeons.layer import (  # noqa: F401  (lth.surgeons.NAME)
    gram,
    hinv_upper,
    magnitude_keep,
    nm_keep,
    parse_pattern,
    sparsegpt,
    wanda_keep,
    wanda_metric,
)
from lth.surgeons.model import METHODS, prune_oneshot  # noqa: F401
from lth.surgeons.obs import prune_obs  # noqa: F401
