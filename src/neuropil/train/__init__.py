"""Training: targets from labels, augmentation, masked binary cross-entropy, the multi-domain trainer."""

from neuropil.train.trainer import TrainConfig, Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
