"""Contractive autoencoder: the Jacobian penalty's two paths agree, it contracts on real digits, it logs and saves."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from ae_lightning.data import MNISTDataModule
from ae_lightning.models.contractive import (
    ContractiveAutoencoder,
    jacobian_norm,
    sigmoid_layer_jacobian_norm,
)
from ae_lightning.nets import ConditionalEncoder, ConvEncoder, MLPDecoder, MLPEncoder

SHAPE = (1, 28, 28)


def cae(weight: float, widths=(64,), **kwargs) -> ContractiveAutoencoder:
    return ContractiveAutoencoder(MLPEncoder(SHAPE, list(widths)), MLPDecoder(SHAPE, list(widths), tied=True),
                                  weight=weight, loss="bce",
                                  optimizer=functools.partial(torch.optim.Adam, lr=3e-3), **kwargs)


def fit(model, dm: MNISTDataModule, steps: int, **trainer_kwargs) -> L.Trainer:
    L.seed_everything(0)
    kwargs = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0, limit_val_batches=0)
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(max_epochs=-1, max_steps=steps, accelerator="cpu", **kwargs)
    trainer.fit(model, dm)
    return trainer


def test_closed_form_equals_torch_func_and_a_deep_encoder_works():
    torch.manual_seed(0)
    x = torch.rand(6, *SHAPE, dtype=torch.float64)  # (B, C, H, W)
    closed, func = cae(0.1, jacobian="closed_form").double(), cae(0.1, jacobian="torch_func").double()
    func.load_state_dict(closed.state_dict())
    assert closed.closed_form and not func.closed_form
    n_closed, n_func = closed.code_jacobian_norm(x), func.code_jacobian_norm(x)  # (B,)
    torch.testing.assert_close(n_closed, n_func, rtol=1e-10, atol=0)
    # and so do the penalties' gradients, which is what training uses
    g_closed = torch.autograd.grad(n_closed.mean(), closed.encoder.linears[0].weight)[0]
    g_func = torch.autograd.grad(n_func.mean(), func.encoder.linears[0].weight)[0]
    torch.testing.assert_close(g_closed, g_func, rtol=1e-8, atol=1e-14)
    assert g_closed.abs().max() > 0

    # a two-layer encoder goes through torch.func; check against autograd's Jacobian, one example at a time
    deep = cae(0.1, widths=(32, 8)).double()
    assert not deep.closed_form  # auto picks torch.func
    expected = torch.stack([torch.autograd.functional.jacobian(deep.encoder, xi[None]).pow(2).sum() for xi in x])
    torch.testing.assert_close(deep.code_jacobian_norm(x), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(jacobian_norm(lambda v, c: deep.encoder(v), x), expected, rtol=1e-10, atol=0)
    # a conditional encoder (label checks in its forward): the Jacobian in x, per example's own label
    cond_enc = ConditionalEncoder(MLPEncoder(SHAPE, [16]), label_dim=10, code_dim=4).double()
    y = torch.arange(6)  # (B,)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda v, c=y[i:i + 1]: cond_enc(v, c), x[i:i + 1])
                            .pow(2).sum() for i in range(6)])
    torch.testing.assert_close(jacobian_norm(cond_enc, x, y), expected, rtol=1e-10, atol=0)

    h = closed.encoder(x)  # (B, 64): the factorised formula by hand for one example and unit
    j, w = h[0, 3], closed.encoder.linears[0].weight[3]
    one_unit = (j * (1 - j)) ** 2 * w.pow(2).sum()
    assert sigmoid_layer_jacobian_norm(h[:1, 3:4], w[None]).item() == pytest.approx(one_unit.item())


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="closed_form"):
        cae(0.1, widths=(32, 8), jacobian="closed_form")
    with pytest.raises(ValueError, match="batch norm"):
        ContractiveAutoencoder(ConvEncoder(SHAPE, [8], norm="batch", code_dim=4), MLPDecoder(SHAPE, [4]))
    with pytest.raises(ValueError, match="λ"):
        cae(-1.0)


@torch.no_grad()
def held_out(model: ContractiveAutoencoder, dm: MNISTDataModule) -> tuple[float, float]:
    """Mean ‖∂h/∂x‖²_F and reconstruction MSE on the held-out digits."""
    model.eval()
    x = dm.val_set.images  # (N, 1, 28, 28)
    return float(model.code_jacobian_norm(x).mean()), float(F.mse_loss(model(x).reconstruction, x))


@pytest.fixture
def one_thread():
    """Nets this small gain nothing from a second thread, and on a loaded 2-core machine OpenMP's
    spinning threads make 600 steps several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_penalty_contracts_the_code_on_real_digits(tiny_mnist, one_thread):
    """300 steps on 256 real digits: λ = 0.003 (the config's) vs the same net and seed with λ = 0.

    Observed: held-out ‖J‖²_F 10.8 vs 21.2 (ratio 0.51); MSE 0.042 vs 0.037, the mean digit scores 0.064.
    """
    contractive, plain = cae(0.003), cae(0.0)
    plain.load_state_dict(contractive.state_dict())  # the same initial net
    fit(contractive, tiny_mnist, steps=300)
    fit(plain, tiny_mnist, steps=300)
    (j_cae, mse_cae), (j_plain, mse_plain) = held_out(contractive, tiny_mnist), held_out(plain, tiny_mnist)
    assert j_cae < 0.7 * j_plain, (j_cae, j_plain)
    mean_digit = float(F.mse_loss(tiny_mnist.train_set.images.mean(0, keepdim=True).expand_as(tiny_mnist.val_set.images),
                                  tiny_mnist.val_set.images))
    assert mse_cae < 0.75 * mean_digit and mse_cae < 1.25 * mse_plain, (mse_cae, mse_plain, mean_digit)


def test_logs_penalty_saves_lambda_and_checkpoint_loads_weights_only(tiny_mnist, tmp_path):
    model = cae(0.02, jacobian="torch_func")  # the general path, also through validation (inference mode)
    trainer = fit(model, tiny_mnist, steps=4, limit_val_batches=1, default_root_dir=tmp_path)  # one epoch, then val
    metrics = trainer.callback_metrics
    x = next(iter(tiny_mnist.val_dataloader()))[0]
    with torch.no_grad():
        penalty = 0.02 * float(model.code_jacobian_norm(x).mean())
    assert float(metrics["val/contractive"]) == pytest.approx(penalty, rel=1e-4)
    assert float(metrics["train/contractive"]) > 0
    assert float(metrics["train/loss"]) == pytest.approx(float(metrics["train/recon"] + metrics["train/contractive"]))
    assert model.hparams.weight == 0.02 and model.hparams.jacobian == "torch_func"

    path = tmp_path / "cae.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["weight"] == 0.02 and ckpt["hyper_parameters"]["loss"] == "bce"
    assert "encoder" not in ckpt["hyper_parameters"]
    restored = ContractiveAutoencoder.load_from_checkpoint(path, encoder=MLPEncoder(SHAPE, [64]),
                                                          decoder=MLPDecoder(SHAPE, [64], tied=True))
    assert restored.hparams.weight == 0.02
    torch.testing.assert_close(restored.encoder.linears[0].weight, model.encoder.linears[0].weight)
