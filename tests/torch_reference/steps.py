"""The DELETE unlearning step and the pretraining step, in plain PyTorch.

These follow SPEC §2 and §3 literally, as the published PyTorch code does them,
so that `delete_jax.steps` can be checked against an independent implementation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The published code overwrites each example's own-label teacher logit with this.
MASK_VALUE = -1e10


def make_sgd(model: nn.Module, lr: float, momentum: float = 0.9,
             weight_decay: float = 0.0) -> torch.optim.SGD:
  """torch.optim.SGD over every parameter (d = g + wd·θ; v ← μv + d; θ ← θ − lr·v)."""
  return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                         weight_decay=weight_decay)


def delete_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
  """KL(softmax(masked teacher) ‖ softmax(student)), 'batchmean' (SPEC §2)."""
  masked = teacher_logits.clone()
  masked[torch.arange(labels.shape[0]), labels] = MASK_VALUE
  target = F.softmax(masked, dim=1)
  kl = nn.KLDivLoss(reduction='batchmean')
  return kl(F.log_softmax(student_logits, dim=1), target)


def delete_step(student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
                images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
  """One DELETE step on a forget batch; returns the loss (detached).

  The teacher runs in eval mode without gradient; the student in train mode, so
  its BatchNorm running statistics are updated from the batch. The parameter
  gradients stay in `.grad` for inspection.
  """
  teacher.eval()
  with torch.no_grad():
    teacher_logits = teacher(images)
  student.train()
  optimizer.zero_grad()
  loss = delete_loss(student(images), teacher_logits, labels)
  loss.backward()
  optimizer.step()
  return loss.detach()


def pretrain_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                  images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
  """One supervised step: mean cross entropy, model in train mode."""
  model.train()
  optimizer.zero_grad()
  loss = F.cross_entropy(model(images), labels)
  loss.backward()
  optimizer.step()
  return loss.detach()
