"""Supervised baselines the semi-supervised results are read against (issue 26): a classifier trained on the labelled
digits alone, without any unlabelled image.

:func:`softmax_regression` is multinomial logistic regression by full-batch L-BFGS (what scikit-learn's
``LogisticRegression(multi_class="multinomial")`` fits, without the dependency); :func:`pixel_logistic_regression`
runs it on the pixels of :class:`~ae_lightning.data.MNISTDataModule`'s labelled pool (the same 100 digits the
semi-supervised models get with ``labelled_per_class=10``), the L2 weight chosen on the validation split::

    pixel_logistic_regression("~/mnist_full", labelled_per_class=10)
    # {'l2': ..., 'val_error': ..., 'test_error': ..., 'labels': 100, ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def softmax_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3,
                       max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (K, D), bias (K,))`` minimising ``mean CE(x Wᵀ + b, y) + l2/2 · ‖W‖²`` for features ``x`` (N, D)."""
    x = x.flatten(1).double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.t() + b, y) + 0.5 * l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


def error_rate(params: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    w, b = params
    return float(((x.flatten(1).float() @ w.t() + b).argmax(1) != y).float().mean())


def pixel_logistic_regression(root: str | None, labelled_per_class: int = 10, seed: int = 0,
                              l2s: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0), max_iter: int = 500) -> dict:
    """Softmax regression on the pixels of the labelled pool alone; the L2 weight with the lowest val error is tested."""
    from ae_lightning.data import MNISTDataModule

    dm = MNISTDataModule(root=root, labelled_per_class=labelled_per_class, seed=seed)
    dm.setup("fit")
    return labelled_pixel_regression(dm, l2s, max_iter)


def labelled_pixel_regression(dm, l2s: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0), max_iter: int = 500) -> dict:
    """:func:`pixel_logistic_regression` on a set-up :class:`~ae_lightning.data.MNISTDataModule` (its labelled pool,
    val and test splits): what a benchmark that already has the split calls."""
    keep = torch.as_tensor(dm.labelled_indices)
    x, y = dm.train_set.images[keep], dm.train_set.labels[keep]  # (n, 1, 28, 28), (n,)
    fits = {l2: softmax_regression(x, y, dm.num_classes, l2, max_iter) for l2 in l2s}
    val = {l2: error_rate(p, dm.val_set.images, dm.val_set.labels) for l2, p in fits.items()}
    best = min(val, key=val.get)
    return {"labels": len(keep), "l2": best, "val_error": val[best],
            "test_error": error_rate(fits[best], dm.test_set.images, dm.test_set.labels),
            "val_errors": {str(k): v for k, v in val.items()}, "data": dm.source,
            "val_images": len(dm.val_set), "test_images": len(dm.test_set)}
