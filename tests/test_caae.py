"""CAAE: nets at the release's sizes, losses, and a short run on synthetic cartoon faces showing that
changing only the age label moves the generated face in the drawn direction (greyer hair)."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
from PIL import Image

from ae_lightning.age_progression import load_run
from ae_lightning.age_progression import main as age_progression
from ae_lightning.cli import main as cli
from ae_lightning.data.synthetic_faces import hair_greyness, write_synthetic_utkface
from ae_lightning.losses import total_variation
from ae_lightning.models import ConditionalAdversarialAutoencoder
from ae_lightning.nets import CAAEEncoder, CAAEGenerator, ImageDiscriminator, MLPDiscriminator

CODE = 4
TINY = [  # 32×32 faces, nets with the release's structure but few channels
    "--data.image_size", "32", "--data.batch_size", "24", "--data.val_fraction", "0.1", "--data.test_fraction", "0.1",
    "--model.encoder.init_args.image_shape", "[3, 32, 32]", "--model.encoder.init_args.channels", "[16, 32, 64]",
    "--model.encoder.init_args.code_dim", str(CODE),
    "--model.generator.init_args.image_shape", "[3, 32, 32]", "--model.generator.init_args.channels", "[64, 32, 16, 16]",
    "--model.generator.init_args.code_dim", str(CODE),
    "--model.latent_discriminator.init_args.in_features", str(CODE), "--model.prior.init_args.dim", str(CODE),
    "--model.image_discriminator.init_args.image_shape", "[3, 32, 32]",
    "--model.image_discriminator.init_args.channels", "[8, 16]", "--model.image_discriminator.init_args.hidden", "32",
    "--model.reconstruction_only_epochs", "1", "--model.optimizer.init_args.lr", "0.002", "--model.num_faces", "4",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "1",
]


def test_release_sizes():
    enc, gen, d_img = CAAEEncoder(), CAAEGenerator(), ImageDiscriminator()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    cond = -torch.ones(2, 12)
    cond[:, 3] = cond[:, 10] = 1
    z = enc(x)
    assert z.shape == (2, 50) and z.abs().max() <= 1
    assert gen.fc[0].in_features == 50 + 10 * 5 + 2 * 25  # labels tiled to balance z
    out = gen(z, cond)
    assert out.shape == (2, 3, 128, 128) and out.abs().max() <= 1
    assert d_img(x, cond).shape == (2, 1)
    with pytest.raises(ValueError, match="divisible"):
        CAAEEncoder((3, 100, 100))


def test_total_variation_matches_release_formula():
    x = torch.zeros(2, 3, 4, 4)
    assert total_variation(x) == 0
    x[:, :, 2:, :] = 1.0  # one horizontal edge: 3 channels × 4 columns of unit steps
    assert total_variation(x).item() == pytest.approx(0.5 * 12 * 2 / 4 / 2)


def test_bad_labels_and_missing_condition():
    model = ConditionalAdversarialAutoencoder(
        CAAEEncoder((3, 32, 32), [8, 16], code_dim=CODE), CAAEGenerator((3, 32, 32), CODE, channels=[16, 8, 8]),
        MLPDiscriminator(CODE, [8]), ImageDiscriminator((3, 32, 32), channels=[8], hidden=8), reconstruction_only_epochs=0,
    )
    with pytest.raises(ValueError, match="age groups"):
        model.make_condition(torch.tensor([10]), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels"):
        model(torch.rand(1, 3, 32, 32))
    out = model(torch.rand(2, 3, 32, 32), model.make_condition(torch.tensor([0, 9]), torch.tensor([0, 1])))
    assert out.reconstruction.shape == (2, 3, 32, 32) and 0 <= out.reconstruction.min() <= out.reconstruction.max() <= 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caae")
    root = tmp / "faces"
    write_synthetic_utkface(root, 240, image_size=32, seed=0)
    torch.set_num_threads(1)
    cli(["fit", "--config", "configs/caae_utkface.yaml", "--data.root", str(root), *TINY,
         "--trainer.max_epochs", "30", "--trainer.logger.init_args.save_dir", str(tmp / "runs")])
    (ckpt,) = glob.glob(str(tmp / "runs" / "caae_utkface" / "version_0" / "checkpoints" / "last.ckpt"))
    return tmp, ckpt


def test_age_label_moves_face_in_known_direction(trained_run):
    tmp, ckpt = trained_run
    model, data = load_run(ckpt, with_data=True)  # also checks the checkpoint loads with weights_only=True
    data.setup("test")
    x = torch.stack([data.test_set[i][0] for i in range(len(data.test_set))])
    gender = torch.tensor([data.test_set[i][1]["gender"] for i in range(len(data.test_set))])
    faces = model.age_progression(x, gender)  # (N, 10, 3, 32, 32): same z, only the age label changes
    grey = torch.stack([hair_greyness(faces[:, a]) for a in range(10)], dim=1)  # (N, 10)
    young, old = grey[:, :3].mean(1), grey[:, -2:].mean(1)
    # the renderer's hair goes from dark (≈0.16) to white (≈0.92) between ages 30 and 80
    assert (old - young).mean() > 0.15, grey.mean(0)
    assert (old > young).float().mean() >= 0.8, grey.mean(0)
    # the age-progression grid is also logged each validation epoch
    assert list((tmp / "runs" / "caae_utkface" / "version_0" / "images").glob("val_age_progression_epoch*.png"))


def test_age_progression_script_writes_grid(trained_run, tmp_path):
    tmp, ckpt = trained_run
    out = age_progression(["--ckpt", ckpt, "--indices", "0", "1", "2", "--out", str(tmp_path / "grid.png")])
    w, h = Image.open(out).size
    assert (w, h) == (11 * 34 + 2, 3 * 34 + 2)  # 3 rows; input + 10 age groups; 32 px + 2 px padding
    face = sorted((tmp / "faces").glob("*.jpg"))[0]
    out2 = age_progression(["--ckpt", ckpt, "--images", str(face), "--out", str(tmp_path / "one.png")])
    assert Image.open(out2).size == (11 * 34 + 2, 34 + 2)


def test_predict_writes_an_age_progression_grid_per_face(trained_run, tmp_path):
    """``ae-lightning predict`` on a CAAE run: one grid per test face, as the age_progression script draws it."""
    tmp, ckpt = trained_run
    cli(["predict", "--config", "configs/caae_utkface.yaml", "--data.root", str(tmp / "faces"), *TINY,
         "--ckpt_path", ckpt, "--trainer.limit_predict_batches", "1", "--prediction.output_dir", str(tmp_path / "out"),
         "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    grids = sorted((tmp_path / "out").glob("*.png"))
    assert len(grids) == 24 and grids[0].name == "000000.png"  # one batch of 24 test faces
    assert Image.open(grids[0]).size == (11 * 34 + 2, 34 + 2)  # input + 10 age groups
    by_script = age_progression(["--ckpt", ckpt, "--indices", "0", "--out", str(tmp_path / "script.png")])
    ours, theirs = (np.asarray(Image.open(p), dtype=np.int64) for p in (grids[0], by_script))
    assert np.abs(ours - theirs).max() <= 1  # the same face's grid (rounding of the 8-bit writes)


class _Faces(torch.utils.data.Dataset):
    """Random 32×32 faces with UTKFace-style targets ``{"age_group", "gender"}``."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 32, 32, generator=g)
        self.age, self.gender = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {"age_group": self.age[i], "gender": self.gender[i]}


def test_three_optimisers_and_adversarial_terms_after_reconstruction_only_epochs():
    """Two epochs of two batches, ``reconstruction_only_epochs=1``. Around every optimiser step: the E+G optimiser
    moves encoder + generator only, D_z's the latent discriminator only, D_img's the image discriminator only,
    in that order. The E+G loss is the reconstruction alone in epoch 0, and gains the adversarial terms
    (``train/g_loss``, ``train/g_img_loss`` logged) from epoch 1 on."""
    import lightning as L
    from conftest import OptimizerSteps

    torch.manual_seed(0)
    model = ConditionalAdversarialAutoencoder(
        CAAEEncoder((3, 32, 32), [8, 16], code_dim=CODE), CAAEGenerator((3, 32, 32), CODE, channels=[16, 8, 8]),
        MLPDiscriminator(CODE, [8]), ImageDiscriminator((3, 32, 32), channels=[8], hidden=8),
        reconstruction_only_epochs=1, weight_image_adv=1.0, weight_latent_adv=1.0,  # weights large enough to see
    )
    eg_losses, logged = [], []  # (epoch, E+G loss) per update; (epoch, logged keys) per batch
    update = model._update

    def recording_update(optimizer, loss):
        if getattr(optimizer, "optimizer", optimizer) is model.trainer.optimizers[0]:
            eg_losses.append((model.current_epoch, float(loss)))
        update(optimizer, loss)

    model._update = recording_update

    class Grab(L.Callback):  # the step's terms (Autoencoder.log_terms keeps every one, every step)
        def on_train_batch_end(self, trainer, module, *args):
            logged.append((module.current_epoch, {k: float(v) for k, v in module.train_terms.items()}))

    steps = OptimizerSteps()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[steps, Grab()])
    trainer.fit(model, torch.utils.data.DataLoader(_Faces(16), batch_size=8))

    eg, dz, dimg = (0, {"encoder", "decoder"}), (1, {"discriminator"}), (2, {"image_discriminator"})  # decoder = G
    for epoch in (0, 1):
        assert steps.moves(epoch) == [eg, dz, dimg] * 2, epoch
    adversarial = {"train/g_loss", "train/g_img_loss"}
    for (epoch, loss), (_, metrics) in zip(eg_losses, logged, strict=True):
        recon = metrics["train/recon"]
        if epoch == 0:  # reconstruction only: no adversarial term logged or added
            assert not adversarial & set(metrics) and loss == pytest.approx(recon, rel=1e-6), (epoch, metrics)
        else:
            assert adversarial <= set(metrics), metrics
            assert loss == pytest.approx(recon + metrics["train/g_loss"] + metrics["train/g_img_loss"],
                                         rel=1e-5)
