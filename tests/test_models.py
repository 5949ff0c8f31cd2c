"""Autoencoder / DenoisingAutoencoder: clean targets, learning on real digits, seeded validation noise,
test metrics, checkpoints that load with ``weights_only=True``, image grids."""

from __future__ import annotations

import logging
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from ae_lightning.callbacks import ReconstructionGrid
from ae_lightning.losses import reconstruction_loss
from ae_lightning.models import Autoencoder, AutoencoderOutput, DenoisingAutoencoder
from ae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from ae_lightning.noise import Masking, NoiseModel

SHAPE = (1, 28, 28)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def trainer(**kw) -> L.Trainer:
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, accelerator="cpu", devices=1)
    return L.Trainer(**{**defaults, **kw})


def mlp_ae(cls=Autoencoder, width=16, **kw):
    return cls(MLPEncoder(SHAPE, [width]), MLPDecoder(SHAPE, [width]), **kw)


class Invert(NoiseModel):
    """A deterministic 'noise' whose output is easy to recognise: 1 - x."""

    label = "invert"

    def corrupt(self, x, generator):
        return 1 - x


class InputSpy:
    """Forward pre-hook recording what the encoder was given, and whether the module was training."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[tuple[bool, torch.Tensor]] = []
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls.append((module.training, args[0].detach().clone()))

    def inputs(self, training: bool) -> list[torch.Tensor]:
        return [x for t, x in self.calls if t == training]


# --- the step ---------------------------------------------------------------------------------
def test_forward_returns_typed_output():
    model = mlp_ae()
    out = model(torch.rand(3, *SHAPE))
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == (3, *SHAPE) and out.code.shape == (3, 16)
    with pytest.raises(KeyError):
        _ = out.loss  # filled by the step, not by forward


def test_denoising_loss_uses_the_clean_target():
    torch.manual_seed(0)
    model = mlp_ae(DenoisingAutoencoder, noise=Invert(), loss="mse")
    spy = InputSpy(model.encoder)
    x = torch.rand(4, *SHAPE)  # clean
    out = model.shared_step((x, torch.zeros(4)), "train")
    (_, seen), = spy.calls
    assert torch.equal(seen, 1 - x)  # the encoder saw the corrupted image
    loss = out.loss.item()
    assert loss == pytest.approx(F.mse_loss(out.reconstruction, x).item())  # scored against the clean one
    assert loss != pytest.approx(F.mse_loss(out.reconstruction, 1 - x).item())


def test_plain_autoencoder_does_not_corrupt():
    model = mlp_ae()
    x = torch.rand(2, *SHAPE)
    assert model.corrupt(x) is x
    out = model(x)
    assert out.input is x and out.condition is None and out.reconstruction.shape == x.shape
    # the grid shows clean | reconstruction only (no separate input row when nothing was corrupted)
    assert [name for name, _ in model.grid_rows((x, None), out)] == ["clean", "reconstruction"]


def test_residual_reconstruction_subtracts_the_net_output():
    enc = ConvEncoder(SHAPE, [4], downsample="none")
    dec = ConvDecoder(SHAPE, [4], upsample="none", output_activation=None)
    model = Autoencoder(enc, dec, residual=True)
    x = torch.rand(2, *SHAPE)
    torch.testing.assert_close(model(x).reconstruction, x - dec(enc(x)))


def test_reconstruction_loss_kinds_and_errors():
    x_hat, x = torch.full((2, 1, 4, 4), 0.25), torch.ones(2, 1, 4, 4)
    assert reconstruction_loss(x_hat, x, "mse").item() == pytest.approx(0.5625)
    assert reconstruction_loss(x_hat, x, "l1").item() == pytest.approx(0.75)
    assert reconstruction_loss(x_hat, x, "bce").item() == pytest.approx(-np.log(0.25), rel=1e-5)
    assert torch.isfinite(reconstruction_loss(torch.zeros(2, 1, 4, 4), x, "bce"))  # clamped, no inf
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(x_hat, torch.ones(2, 1, 4, 5))
    with pytest.raises(ValueError, match="unknown reconstruction loss 'huber'"):
        reconstruction_loss(x_hat, x, "huber")


# --- training on real digits --------------------------------------------------------------------
def test_short_fit_on_real_mnist_beats_the_mean_image():
    """96 Adam steps of a 784-32-784 MLP on embedded real digits: val MSE < 80 % of predicting the
    mean training digit, and < 30 % of the untrained net's."""
    from ae_lightning.data import MNISTDataModule

    dm = MNISTDataModule(root=None, batch_size=32, train_size=1024)
    dm.setup("fit")
    mean_digit = dm.train_set.images.mean(0)  # (1, 28, 28)
    baseline = F.mse_loss(mean_digit.expand_as(dm.val_set.images), dm.val_set.images).item()
    L.seed_everything(0)
    model = Autoencoder(MLPEncoder(SHAPE, [32], activation="relu", code_activation="relu"),
                        MLPDecoder(SHAPE, [32]), loss="mse", optimizer=partial(torch.optim.Adam, lr=1e-2))
    before = trainer().validate(model, dm, verbose=False)[0]
    trainer(max_epochs=3).fit(model, dm)
    after = trainer().validate(model, dm, verbose=False)[0]
    assert after["val/loss"] < 0.8 * baseline, (after, baseline)
    assert after["val/loss"] < 0.3 * before["val/loss"], (after, before)
    assert after["val/psnr"] > before["val/psnr"] + 5
    assert after["val/ssim"] > before["val/ssim"]


def test_gray_grids_are_one_channel_pngs_of_the_same_pixels(tmp_path):
    """A grid of gray images (make_grid repeats their channel three times) is written as a one-channel PNG, a third of
    the pixels to compress: the values torchvision's save_image writes in each of its three channels. A colour grid
    stays RGB."""
    from torchvision.utils import make_grid, save_image

    from ae_lightning.callbacks.images import save_png

    gray = make_grid(torch.rand(6, 1, 28, 28), nrow=3, pad_value=1.0)  # (3, H, W), equal channels
    save_png(gray, tmp_path / "ours.png")
    save_image(gray, tmp_path / "torchvision.png")
    with Image.open(tmp_path / "ours.png") as ours, Image.open(tmp_path / "torchvision.png") as theirs:
        assert ours.mode == "L" and theirs.mode == "RGB"
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)[..., 0])
    colour = make_grid(torch.rand(2, 3, 8, 8))
    save_png(colour, tmp_path / "colour.png")
    with Image.open(tmp_path / "colour.png") as im:
        assert im.mode == "RGB"


def test_validation_ssim_covers_the_first_images_by_default_and_every_image_on_request(tiny_mnist):
    """``val/ssim`` is over the first ``val_ssim_images`` (100) validation images of each epoch: SSIM costs more per
    digit than a small MLP's forward pass. ``None`` (``--diagnostics.ssim_images=null``) scores every image, and
    ``test/ssim`` always does; PSNR is over every image either way."""
    from ae_lightning.callbacks import Diagnostics
    from ae_lightning.metrics import psnr_ssim

    L.seed_everything(0)
    model = mlp_ae(loss="mse")
    assert model.val_ssim_images == 100
    x = tiny_mnist.val_set.images  # (300, 1, 28, 28): 5 batches of 64
    with torch.no_grad():
        psnr, ssim = psnr_ssim(model(x).reconstruction, x)
    bounded = trainer().validate(model, tiny_mnist, verbose=False)[0]
    assert bounded["val/ssim"] == pytest.approx(float(ssim[:100].mean()), abs=1e-5)
    assert bounded["val/psnr"] == pytest.approx(float(psnr.mean()), abs=1e-4)
    every = trainer(callbacks=[Diagnostics(ssim_images=None)]).validate(model, tiny_mnist, verbose=False)[0]
    assert model.val_ssim_images is None
    assert every["val/ssim"] == pytest.approx(float(ssim.mean()), abs=1e-5) != pytest.approx(bounded["val/ssim"])
    tiny_mnist.setup("test")
    t = tiny_mnist.test_set.images
    with torch.no_grad():
        _, test_ssim = psnr_ssim(model(t).reconstruction, t)
    model.val_ssim_images = 10  # validation's bound only
    assert trainer().test(model, tiny_mnist, verbose=False)[0]["test/ssim"] == pytest.approx(float(test_ssim.mean()),
                                                                                          abs=1e-5)


def test_validation_noise_is_identical_across_epochs_and_training_noise_is_not(tmp_path, tiny_mnist):
    L.seed_everything(0)
    model = mlp_ae(DenoisingAutoencoder, noise=Masking(0.5))
    spy = InputSpy(model.encoder)
    grid = ReconstructionGrid(num_images=4)
    trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=2, default_root_dir=tmp_path,
            callbacks=[grid]).fit(model, tiny_mnist)
    train_in = spy.inputs(training=True)
    assert len(train_in) == 4
    assert not torch.equal(train_in[0] == 0, train_in[2] == 0)  # fresh masks each step
    val_in = spy.inputs(training=False)
    assert len(val_in) == 4  # 2 epochs × 2 batches: the grid reuses the validation step's output, no extra pass
    clean = next(iter(tiny_mnist.val_dataloader()))[0]
    assert not torch.equal(val_in[0], clean)  # it is corrupted…
    assert torch.equal(val_in[0], val_in[2]) and torch.equal(val_in[1], val_in[3])  # …the same way every epoch
    # the grid: rows clean | noisy | reconstruction of 4 images, one PNG per epoch, same noisy row
    pngs = sorted((tmp_path / "images").glob("*.png"))
    assert [p.name for p in pngs] == ["val_reconstruction_epoch000.png", "val_reconstruction_epoch001.png"]
    a, b = (np.asarray(Image.open(p).convert("L")) for p in pngs)
    assert a.shape == (3 * 30 + 2, 4 * 30 + 2)  # 28-px images with 2-px padding
    assert np.array_equal(a[:62], b[:62])  # clean and noisy rows match across epochs
    assert (a[32:60, 2:30] == 0).mean() > 0.5  # the noisy row is masked (≥ 50 % of a digit's pixels black)
    # …and it is exactly the input the validation step scored (first 4 images of the first batch)
    scored = (val_in[2][:4].clamp(0, 1) * 255 + 0.5).to(torch.uint8)  # save_image's rounding
    grid_row = torch.from_numpy(b[32:60, 2:].copy()).unfold(1, 28, 30)[:, :4].permute(1, 0, 2)  # (4, 28, 28)
    assert torch.equal(grid_row, scored[:, 0]), "the grid's input row is not the input that was scored"


def test_test_metrics_are_logged(tiny_mnist):
    model = mlp_ae(DenoisingAutoencoder, noise=Masking(0.3))
    (res,) = trainer(limit_test_batches=2).test(model, tiny_mnist, verbose=False)
    assert set(res) == {"test/loss", "test/psnr", "test/ssim"}
    assert all(np.isfinite(v) for v in res.values())
    assert 0 < res["test/psnr"] < 60 and -1 <= res["test/ssim"] <= 1
    # a second evaluation with the same weights gives the same numbers (seeded noise, fresh metric state)
    (again,) = trainer(limit_test_batches=2).test(model, tiny_mnist, verbose=False)
    assert again == pytest.approx(res)


def test_validate_then_fit_then_test(tiny_mnist):
    """Metric states left by an inference-mode `validate` must not break the next `fit`."""
    model = mlp_ae()
    trainer(limit_val_batches=1).validate(model, tiny_mnist, verbose=False)
    trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(model, tiny_mnist)
    (res,) = trainer(limit_test_batches=1).test(model, tiny_mnist, verbose=False)
    assert np.isfinite(res["test/psnr"])


@pytest.mark.parametrize("cls", [Autoencoder, DenoisingAutoencoder])
def test_checkpoint_loads_with_weights_only(tmp_path, tiny_mnist, cls):
    kw = {"noise": Masking(0.3)} if cls is DenoisingAutoencoder else {}
    model = cls(MLPEncoder(SHAPE, [16]), MLPDecoder(SHAPE, [16], tied=True), loss="bce",
                optimizer=partial(torch.optim.Adam, lr=2e-3), **kw)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_checkpointing=True,
            callbacks=[ckpt_cb]).fit(model, tiny_mnist)
    assert ckpt_cb.best_model_path and (tmp_path / "last.ckpt").is_file()
    ckpt = torch.load(ckpt_cb.best_model_path, weights_only=True)
    expected = {"loss": "bce", "residual": False} | ({"weights": None} if cls is DenoisingAutoencoder else {})
    assert ckpt["hyper_parameters"] == expected  # plain values only
    assert model.optimizers().optimizer.param_groups[0]["lr"] == 2e-3  # the injected optimiser was used
    fresh = cls(MLPEncoder(SHAPE, [16]), MLPDecoder(SHAPE, [16], tied=True), **kw)
    fresh.load_state_dict(ckpt["state_dict"])
    x = torch.rand(2, *SHAPE)
    torch.testing.assert_close(fresh(x).reconstruction, model(x).reconstruction)
    # and through Lightning, injecting the nets again
    again = cls.load_from_checkpoint(ckpt_cb.best_model_path, weights_only=True, encoder=MLPEncoder(SHAPE, [16]),
                                     decoder=MLPDecoder(SHAPE, [16], tied=True), **kw)
    assert again.hparams.loss == "bce"
    torch.testing.assert_close(again(x).reconstruction, model(x).reconstruction)


def test_shape_mismatch_between_nets_and_data_fails_in_one_line(tiny_mnist):
    model = Autoencoder(ConvEncoder((1, 32, 32), [4]), ConvDecoder((1, 32, 32), [4]))
    with pytest.raises(ValueError) as err:
        trainer(fast_dev_run=1).fit(model, tiny_mnist)
    assert "set image_shape: [1, 28, 28]" in str(err.value) and "\n" not in str(err.value)


def test_predict_returns_clamped_reconstructions(tiny_mnist):
    model = Autoencoder(ConvEncoder(SHAPE, [4]), ConvDecoder(SHAPE, [4], output_activation=None))
    batches = trainer(limit_predict_batches=1).predict(model, tiny_mnist)
    assert batches[0].kind == "reconstruction" and batches[0].values.shape == (64, *SHAPE)
    assert batches[0].values.min() >= 0 and batches[0].values.max() <= 1


class _WithCritic(DenoisingAutoencoder):
    """A subclass with an extra net argument, as the adversarial variants have."""

    def __init__(self, encoder, decoder, noise, critic: torch.nn.Module, beta: float = 0.5) -> None:
        super().__init__(encoder, decoder, noise)
        self.critic = critic


def test_hparams_keep_plain_values_only_across_subclasses(recwarn):
    model = _WithCritic(MLPEncoder(SHAPE, [8]), MLPDecoder(SHAPE, [8]), Masking(0.3), torch.nn.Linear(2, 1))
    # objects stay in the config; base-class arguments the subclass does not take are not saved either
    # (load_from_checkpoint passes hparams back to the subclass)
    assert dict(model.hparams) == {"beta": 0.5}
    assert not [w for w in recwarn if "is an instance of `nn.Module`" in str(w.message)]


def test_cosine_schedule_decays_the_learning_rate_to_zero(tiny_mnist):
    from ae_lightning.optim import CosineToZero

    model = mlp_ae(optimizer=partial(torch.optim.Adam, lr=0.01), lr_scheduler=CosineToZero)
    trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=0).fit(model, tiny_mnist)
    opt = model.optimizers().optimizer
    assert opt.param_groups[0]["lr"] < 1e-6  # one cosine period over the whole fit
    constant = mlp_ae(optimizer=partial(torch.optim.Adam, lr=0.01))
    trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=0).fit(constant, tiny_mnist)
    assert constant.optimizers().optimizer.param_groups[0]["lr"] == 0.01


def test_optimizer_and_schedule_are_injected(tiny_mnist):
    """AdamW + OneCycle from the caller, as a YAML `optimizer:` / `lr_scheduler:` block would give them."""
    model = mlp_ae(optimizer=partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1),
                   lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=6))
    fit = trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=0)
    fit.fit(model, tiny_mnist)
    opt = model.optimizers().optimizer
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.1
    (sched,) = model.lr_schedulers() if isinstance(model.lr_schedulers(), list) else [model.lr_schedulers()]
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.last_epoch == fit.global_step > 1  # per batch


def test_hparams_follow_the_signature_types_not_the_call_stack():
    from ae_lightning.hparams import hyperparameter_names, is_plain

    assert is_plain(float) and is_plain(int | list[int]) and is_plain(tuple[float, float] | None)
    assert not is_plain(torch.nn.Module) and not is_plain(NoiseModel | None)
    # DenoisingAutoencoder forwards **kwargs: the base class's plain arguments are its hyperparameters too
    assert hyperparameter_names(DenoisingAutoencoder) == ["weights", "loss", "residual"]
    model = mlp_ae(DenoisingAutoencoder, noise=Masking(0.3), loss="bce", residual=False)
    assert dict(model.hparams) == {"weights": None, "loss": "bce", "residual": False}
