"""scikit-learn's multinomial logistic regression, solved with torch (GPU when present).

``TorchLogisticRegression`` minimises exactly the objective of scikit-learn's
``LogisticRegression(penalty="l2", solver="lbfgs")`` (scikit-learn 1.9,
``sklearn/linear_model/_logistic.py``: ``l2_reg_strength = 1 / (C * sw_sum)`` handed to
``LinearModelLoss``, whose loss is the mean per-sample loss plus ``l2_reg_strength / 2 *
||coef||^2``, intercept not penalised). Multiplied by ``C * n`` that is the documented
``C * sum_i CE_i + ||W||^2 / 2``. Here, with ``n`` training rows:

- more than two classes: ``mean_i CE_i + ||W||^2 / (2 * C * n)`` over a ``(K, d)`` weight
  matrix, as scikit-learn's multinomial ``coef_``;
- two classes: scikit-learn fits one row ``w`` with the binomial loss and ``||w||^2 /
  (2 * C * n)``. This solver keeps two rows ``W = (w0, w1)`` (a softmax over two logits is
  the binomial loss of ``w1 - w0``) and penalises ``||W||^2 / (C * n)``: at the optimum
  ``w0 = -w1``, so that is ``||w1 - w0||^2 / (2 * C * n)``, the same objective. ``coef_``
  and ``intercept_`` are reported in scikit-learn's one-row layout (``w1 - w0``).

Full batch: ``torch.optim.LBFGS`` with a strong-Wolfe line search, stopping when the largest
absolute gradient entry is at most ``tol`` (scikit-learn's ``gtol``, on the same objective).
Mini-batch (``minibatch=True``, or automatically when the data would not fit the device):
Adam on mini-batches of the same objective (penalty in the loss), with a cosine learning-rate
decay. Adam's decoupled weight decay (AdamW) is not used on purpose: with Adam's per-weight
step scaling it does not minimise this objective, so its optimum would not follow C.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional

from .devices import pick_device

FULL_BATCH_MEMORY_SHARE = 0.5  # full batch only when X (float32) takes at most this share
CPU_FULL_BATCH_BYTES = 8 * 2**30  # on the CPU, X is in memory already; past this, mini-batch


def full_batch_fits(n_bytes: int, device: torch.device) -> bool:
    """Whether ``n_bytes`` of float32 embeddings (plus working memory) fit on ``device``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return n_bytes <= FULL_BATCH_MEMORY_SHARE * free
    if device.type == "mps":
        return n_bytes <= FULL_BATCH_MEMORY_SHARE * torch.mps.recommended_max_memory()
    return n_bytes <= CPU_FULL_BATCH_BYTES


def penalty_per_squared_weight(C: float, n_samples: int, n_rows: int) -> float:
    """Factor on ``||W||^2`` that makes the torch objective scikit-learn's (module docstring)."""
    return (1.0 if n_rows == 2 else 0.5) / (C * n_samples)


class TorchLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2-regularised multinomial logistic regression (``nn.Linear`` + cross-entropy).

    Minimises ``mean_i CE_i + ||W||^2 / (2 * C * n)`` (``||W||^2 / (C * n)`` over the two
    rows of a binary problem): scikit-learn's ``C * sum_i CE_i + ||w||^2 / 2`` divided by
    ``C * n``, the intercept unpenalised (module docstring). ``coef_``, ``intercept_``,
    ``classes_``, ``n_features_in_``, ``n_iter_``, ``predict`` and ``predict_proba`` behave
    as ``LogisticRegression``'s, one coefficient row for two classes included.

    Parameters follow ``LogisticRegression`` where they overlap (``C``, ``tol``,
    ``max_iter``, ``warm_start``, ``random_state``). ``device``: "auto" (CUDA, then MPS, then
    CPU) or a torch device name. ``minibatch``: None decides from the data size
    (``full_batch_fits``). ``batch_size``, ``epochs`` and ``learning_rate`` drive the
    mini-batch mode only (``max_iter`` and ``tol`` the full-batch L-BFGS only).
    """

    def __init__(
        self,
        C: float = 1.0,
        tol: float = 1e-4,
        max_iter: int = 1000,
        warm_start: bool = False,
        device: str = "auto",
        minibatch: bool | None = None,
        batch_size: int = 256,
        epochs: int = 100,
        learning_rate: float = 0.1,
        random_state: int = 0,
    ):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.device = device
        self.minibatch = minibatch
        self.batch_size = batch_size
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> TorchLogisticRegression:
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.classes_, targets = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("logistic regression needs at least two classes")
        device = pick_device(self.device)
        n_rows, dim = len(self.classes_), X.shape[1]
        linear = self._start(n_rows, dim, device)
        minibatch = self.minibatch
        if minibatch is None:
            minibatch = not full_batch_fits(X.nbytes, device)
        penalty = penalty_per_squared_weight(self.C, len(X), n_rows)
        if minibatch:
            self.n_iter_ = np.array([self._fit_minibatch(linear, X, targets, penalty, device)])
        else:
            self.n_iter_ = np.array([self._fit_full_batch(linear, X, targets, penalty, device)])
        self.linear_ = linear
        self.n_features_in_ = dim
        self.minibatch_ = bool(minibatch)
        weight = linear.weight.detach().double().cpu().numpy()
        bias = linear.bias.detach().double().cpu().numpy()
        if n_rows == 2:  # scikit-learn's layout: one row, the second class's logit minus the first
            weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
        self.coef_, self.intercept_ = weight, bias
        return self

    def _start(self, n_rows: int, dim: int, device: torch.device) -> nn.Linear:
        previous = getattr(self, "linear_", None)
        if self.warm_start and previous is not None and previous.weight.shape == (n_rows, dim):
            linear = nn.Linear(dim, n_rows, device=device)
            with torch.no_grad():
                linear.weight.copy_(previous.weight)
                linear.bias.copy_(previous.bias)
            return linear
        linear = nn.Linear(dim, n_rows, device=device)
        nn.init.zeros_(linear.weight)  # scikit-learn starts from zero too
        nn.init.zeros_(linear.bias)
        return linear

    def _fit_full_batch(self, linear, X, targets, penalty: float, device) -> int:
        features = torch.from_numpy(X).to(device)
        labels = torch.from_numpy(targets).to(device)
        optimizer = torch.optim.LBFGS(
            linear.parameters(),
            lr=1,
            max_iter=self.max_iter,
            tolerance_grad=self.tol,
            tolerance_change=1e-12,
            history_size=10,  # scipy's L-BFGS-B default (maxcor), as scikit-learn uses
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = functional.cross_entropy(linear(features), labels)
            loss = loss + penalty * linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return int(optimizer.state[optimizer.param_groups[0]["params"][0]].get("n_iter", 0))

    def _fit_minibatch(self, linear, X, targets, penalty: float, device) -> int:
        generator = torch.Generator().manual_seed(self.random_state)
        optimizer = torch.optim.Adam(linear.parameters(), lr=self.learning_rate)
        n_batches = math.ceil(len(X) / self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.epochs * n_batches)
        )
        labels_all = torch.from_numpy(targets)
        steps = 0
        for _epoch in range(self.epochs):
            order = torch.randperm(len(X), generator=generator).numpy()
            for start in range(0, len(X), self.batch_size):
                rows = order[start : start + self.batch_size]
                features = torch.from_numpy(X[rows]).to(device, non_blocking=True)
                labels = labels_all[rows].to(device, non_blocking=True)
                optimizer.zero_grad()
                loss = functional.cross_entropy(linear(features), labels)
                loss = loss + penalty * linear.weight.square().sum()
                loss.backward()
                optimizer.step()
                schedule.step()
                steps += 1
        return steps

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits, one column per class (two columns for two classes)."""
        check_is_fitted(self, "linear_")
        weight = self.linear_.weight.detach()
        features = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        logits = []
        with torch.no_grad():
            for start in range(0, len(features), 65536):  # bounded device memory
                chunk = features[start : start + 65536].to(weight.device)
                logits.append(self.linear_(chunk).double().cpu())
        return torch.cat(logits).numpy() if logits else np.zeros((0, len(self.classes_)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(self.decision_function(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
