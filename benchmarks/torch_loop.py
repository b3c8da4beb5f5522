"""The PyTorch twin's unlearn-and-evaluate loop, written the way the published code runs.

Host batching as a PyTorch `DataLoader` does it: a map-style `Dataset` whose
`__getitem__` turns one uint8 image into a normalised float tensor (the
torchvision `RandomHorizontalFlip → ToTensor → Normalize` chain written in torch
ops, since torchvision is not installed here), a shuffled `DataLoader` of batch
128 that collates the items, and four unshuffled, unaugmented loaders for the
evaluation splits (train-forget, train-remain, test-forget, test-remain). The
DELETE step is the twin's (`tests/torch_reference/steps.py`).
"""

from __future__ import annotations

import copy
import time
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tests.torch_reference import steps as torch_steps


class ImageDataset(Dataset):
  """uint8 NHWC images → (normalised float CHW tensor, label), optionally flipped."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
               mean, std, flip: bool):
    self.images = images
    self.labels = labels
    self.indices = np.asarray(indices)
    self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    self.flip = flip

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    j = self.indices[i]
    x = torch.from_numpy(np.array(self.images[j])).permute(2, 0, 1).float().div_(255.0)
    if self.flip and torch.rand(1).item() < 0.5:
      x = x.flip(-1)
    x = (x - self.mean) / self.std
    return x, int(self.labels[j])


def loader(images, labels, indices, mean, std, *, flip: bool, shuffle: bool,
           batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
  gen = torch.Generator().manual_seed(seed)
  return DataLoader(ImageDataset(images, labels, indices, mean, std, flip),
                    batch_size=batch_size, shuffle=shuffle, generator=gen,
                    num_workers=num_workers, drop_last=False)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: DataLoader, device: torch.device) -> float:
  model.eval()
  correct = total = 0
  for x, y in data:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    correct += int((model(x).argmax(1) == y).sum())
    total += len(y)
  return 100.0 * correct / max(total, 1)


def unlearn_and_evaluate(dataset, split, original_state: dict, model_fn, *,
                         epochs: int, eval_every: int, lr: float, momentum: float,
                         mean, std, batch_size: int = 128, eval_batch_size: int = 128,
                         device: str = 'cpu', seed: int = 0, num_workers: int = 0,
                         forget_indices: Optional[np.ndarray] = None,
                         evaluate: bool = True) -> dict:
  """DELETE for `epochs` over the forget set, evaluating the four splits every
  `eval_every` epochs (0: once at the end; `evaluate=False`: never). Returns
  timings and accuracies.

  Args:
    dataset: delete_jax.data.ImageDataset (host uint8 arrays).
    split: delete_jax.data.ClassSplit of the forget classes.
    original_state: torch state_dict of the original model.
    model_fn: builds an uninitialised twin.
    forget_indices: override of split.train_forget (e.g. repeated for scaling).
  """
  dev = torch.device(device)
  teacher = model_fn()
  teacher.load_state_dict(original_state)
  teacher.to(dev).eval()
  student = copy.deepcopy(teacher)
  optimizer = torch_steps.make_sgd(student, lr, momentum=momentum)
  forget = split.train_forget if forget_indices is None else forget_indices
  train_loader = loader(dataset.train_images, dataset.train_labels, forget, mean, std,
                        flip=True, shuffle=True, batch_size=batch_size, seed=seed,
                        num_workers=num_workers)
  eval_loaders = {
      'train_forget': (dataset.train_images, dataset.train_labels, split.train_forget),
      'train_remain': (dataset.train_images, dataset.train_labels, split.train_remain),
      'test_forget': (dataset.test_images, dataset.test_labels, split.test_forget),
      'test_remain': (dataset.test_images, dataset.test_labels, split.test_remain),
  }
  eval_loaders = {k: loader(im, lb, idx, mean, std, flip=False, shuffle=False,
                            batch_size=eval_batch_size, seed=seed, num_workers=num_workers)
                  for k, (im, lb, idx) in eval_loaders.items()}

  history = []
  eval_s = train_s = 0.0
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
  t_start = time.perf_counter()
  for epoch in range(1, epochs + 1):
    t = time.perf_counter()
    for x, y in train_loader:
      x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
      loss = torch_steps.delete_step(student, teacher, optimizer, x, y)
    float(loss)  # one host sync per epoch, like a progress line
    sync()
    train_s += time.perf_counter() - t
    if evaluate and (epoch == epochs or (eval_every and epoch % eval_every == 0)):
      t = time.perf_counter()
      accs = {k: accuracy(student, dl, dev) for k, dl in eval_loaders.items()}
      sync()
      eval_s += time.perf_counter() - t
      history.append({'epoch': epoch, **accs})
  total = time.perf_counter() - t_start
  return {'total_s': total, 'train_s': train_s, 'eval_s': eval_s,
          'evaluations': len(history), 'forget_images': int(len(forget)),
          'final_accuracy': ({k: v for k, v in history[-1].items() if k != 'epoch'}
                             if history else None),
          'history': history}
