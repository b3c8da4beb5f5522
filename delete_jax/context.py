"""Everything the stages of one run share, built once from the config."""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from delete_jax import parallel
from delete_jax.data import ClassSplit, ImageDataset, class_split, load_dataset
from delete_jax.data import resolve_forget_classes
from delete_jax.models import create_model
from delete_jax.preprocess import Preprocess
from delete_jax.state import ModelVars, split_model


@dataclasses.dataclass
class RunContext:
  """The dataset, split, model graph and devices of a run.

  Attributes:
    config: the (locked) run config.
    workdir: output directory.
    dataset: host uint8 arrays.
    split: forget/remain indices of both splits.
    graphdef: static model graph (variables travel separately).
    init_vars: freshly initialised variables (seeded).
    preprocess: on-device preprocessing.
    mesh: 1-D device mesh.
  """
  config: ml_collections.ConfigDict
  workdir: str
  dataset: ImageDataset
  split: ClassSplit
  graphdef: nnx.GraphDef
  init_vars: ModelVars
  preprocess: Preprocess
  mesh: jax.sharding.Mesh

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.dataset.train_images.shape[1:])

  @property
  def forget_tag(self) -> str:
    return 'forget-' + '-'.join(str(c) for c in self.split.forget_classes)

  def stage_dir(self, stage: str) -> str:
    """original/, retrain_forget-3-7/, delete_forget-3-7/, ..."""
    if stage == 'original':
      return os.path.join(self.workdir, 'original')
    return os.path.join(self.workdir, f'{stage}_{self.forget_tag}')

  def provenance(self, stage: str, settings: dict) -> dict:
    """The facts a checkpoint of `stage` records about where it came from."""
    return {
        'stage': stage, 'settings': settings, 'model': self.config.model,
        'num_classes': self.dataset.num_classes, 'image_shape': list(self.image_shape),
        'dataset': self.dataset.name, 'dataset_source': self.dataset.source,
        'dataset_fingerprint': self.dataset.fingerprint(),
        'forget_classes': list(self.split.forget_classes), 'seed': self.config.seed,
        'split_sizes': self.split.sizes(), 'device_count': jax.device_count(),
    }

  def is_host0(self) -> bool:
    return jax.process_index() == 0


def preprocess_from_config(config: ml_collections.ConfigDict,
                           dataset: ImageDataset) -> Preprocess:
  resize = config.augment.resize_to or None
  return Preprocess(mean=tuple(dataset.mean), std=tuple(dataset.std),
                    crop_padding=int(config.augment.crop_padding),
                    flip=bool(config.augment.flip), resize_to=resize)


def build_context(config: ml_collections.ConfigDict, workdir: str) -> RunContext:
  """Loads data, resolves the forget classes and builds the model graph."""
  parallel.set_cpu_convolutions(config.get('cpu_convolutions', 'eigen'))
  dataset = load_dataset(config.dataset, config.data_dir or None)
  forget = resolve_forget_classes(config.dataset, dataset.num_classes,
                                  config.forget_classes or None,
                                  config.num_forget if not config.forget_classes else None)
  split = class_split(dataset, forget)
  image_shape = tuple(int(d) for d in dataset.train_images.shape[1:])
  if config.augment.resize_to:
    image_shape = (config.augment.resize_to, config.augment.resize_to, image_shape[2])
  model = create_model(config.model, dataset.num_classes, image_shape, seed=config.seed)
  graphdef, init_vars = split_model(model)
  mesh = parallel.make_mesh()
  parallel.log_topology()
  return RunContext(config=config, workdir=workdir, dataset=dataset, split=split,
                    graphdef=graphdef, init_vars=init_vars,
                    preprocess=preprocess_from_config(config, dataset), mesh=mesh)


def all_indices(n: int) -> np.ndarray:
  return np.arange(n, dtype=np.int64)
