"""Generative models: class- and mask-conditional 2D diffusion (DDPM training, DDIM sampling with classifier-free
guidance), trained on CPU within a time budget. See docs/generative.md."""

from medimg.generate.model import (
    GenData,
    GeneratorError,
    class_index,
    load_class_data,
    load_generator,
    load_mask_data,
    sample,
    train_generator,
)

__all__ = [
    "GenData",
    "GeneratorError",
    "class_index",
    "load_class_data",
    "load_generator",
    "load_mask_data",
    "sample",
    "train_generator",
]
