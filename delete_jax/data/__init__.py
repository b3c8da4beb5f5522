"""Datasets as uint8 host arrays, and the forget/remain class split."""

from delete_jax.data.datasets import DATASET_NAMES
from delete_jax.data.datasets import ImageDataset
from delete_jax.data.datasets import load_dataset
from delete_jax.data.splits import class_split
from delete_jax.data.splits import ClassSplit
from delete_jax.data.splits import FORGET_PERMUTATIONS
from delete_jax.data.splits import forget_permutation
from delete_jax.data.splits import resolve_forget_classes

__all__ = [
    'DATASET_NAMES',
    'ImageDataset',
    'load_dataset',
    'class_split',
    'ClassSplit',
    'FORGET_PERMUTATIONS',
    'forget_permutation',
    'resolve_forget_classes',
]
