"""Training: ``hysafe.train(model, data, recipe, TrainConfig(...))``.

One loop for every recipe (HySAC, Safe-CLIP, SafeR-CLIP, CLIP pretraining) and every backbone
(open_clip with LoRA, cached feature tables): AdamW with no weight decay on scalars/biases/norms,
warm-up + cosine schedule, bf16/fp16 autocast (hyperbolic math stays fp32), gradient
accumulation, DataLoader workers, progress bar, per-term JSONL logs (TensorBoard optional),
validation recall each epoch with early stopping and best-checkpoint selection, atomic
training-state checkpoints with exact resume (model, optimiser, scheduler, scaler, sampler
position, RNG), and multi-process training under ``torchrun`` (gradient all-reduce +
cross-process negatives in the contrastive terms).

==================  ===================================================================
module              one job
==================  ===================================================================
``loop``            ``train()`` and the epoch/step loop
``config``          ``TrainConfig`` (the CLI's options come from its fields) and ``TrainResult``
``data``            manifest / rows / datasets -> train and validation datasets
``sampler``         resumable, rank-split batches
``distributed``     the process's device and process group; gradient all-reduce
``optim``           parameter groups, optimiser, schedule, mixed precision, the update
``state``           resumable training state (safetensors)
``validation``      validation recall, best-weights selection, safety bounds
``logs``            ``log.jsonl``, ``config.json``, TensorBoard
``recipes``         objective + model kind + optimiser settings per method
``pretrain``        the tiny CLIP's contrastive pretraining, exported as an open_clip file
==================  ===================================================================
"""

from .config import TrainConfig, TrainResult
from .data import nearest_safe_targets
from .loop import compute_loss, train
from .sampler import ResumableBatchSampler
from .validation import safety_bounds, validation_recalls

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "compute_loss",
    "ResumableBatchSampler",
    "safety_bounds",
    "validation_recalls",
    "nearest_safe_targets",
]
