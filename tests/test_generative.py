"""The Generative protocol: prior and sample on the VAE, CVAE, AAE and CAAE; the grid callback draws for all of them."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ae_lightning.callbacks import GenerationGrids
from ae_lightning.models import (
    VAE,
    AdversarialAutoencoder,
    ConditionalAdversarialAutoencoder,
    ConditionalVAE,
    Generative,
)
from ae_lightning.nets import (
    CAAEEncoder,
    CAAEGenerator,
    ConditionalDecoder,
    ConditionalEncoder,
    ImageDiscriminator,
    MLPDecoder,
    MLPDiscriminator,
    MLPEncoder,
)
from ae_lightning.priors import GaussianPrior, MixtureOfGaussiansPrior, Prior

SHAPE = (1, 8, 8)
FACE = (3, 16, 16)


def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(MLPEncoder(SHAPE, [16, 6], code_activation=None), MLPDecoder(SHAPE, [16, 3], output_activation=None),
               latent_dim=3)


def cvae() -> ConditionalVAE:
    torch.manual_seed(0)
    return ConditionalVAE(ConditionalEncoder(MLPEncoder(SHAPE, [16], code_activation="relu"), 3, 4),
                          ConditionalDecoder(MLPDecoder(SHAPE, [16, 5], output_activation=None), 3), latent_dim=2)


def aae(supervised: bool = False) -> AdversarialAutoencoder:
    torch.manual_seed(0)
    prior = MixtureOfGaussiansPrior(2, num_components=3, supervised=True) if supervised else GaussianPrior(2)
    return AdversarialAutoencoder(MLPEncoder(SHAPE, [16, 2], code_activation=None), MLPDecoder(SHAPE, [16, 2]),
                                  MLPDiscriminator(2, [8], num_classes=3 if supervised else 0), prior)


def caae() -> ConditionalAdversarialAutoencoder:
    torch.manual_seed(0)
    return ConditionalAdversarialAutoencoder(
        CAAEEncoder(FACE, [8, 16], code_dim=4), CAAEGenerator(FACE, 4, num_ages=3, num_genders=2, channels=[16, 8, 8]),
        MLPDiscriminator(4, [8]), ImageDiscriminator(FACE, num_ages=3, num_genders=2, channels=[8], hidden=8),
        num_age_groups=3, num_faces=2,
    )


# the condition of 5 samples each conditional model takes
CONDITIONS = {
    "cvae": lambda m: torch.tensor([0, 1, 2, 0, 1]),
    "aae_supervised": lambda m: torch.tensor([0, 1, 2, 0, 1]),
    "caae": lambda m: m.make_condition(torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 0, 1, 0])),
}
MODELS = {"vae": (vae, SHAPE), "cvae": (cvae, SHAPE), "aae": (aae, SHAPE),
          "aae_supervised": (lambda: aae(supervised=True), SHAPE), "caae": (caae, FACE)}


@pytest.mark.parametrize("name", MODELS)
def test_every_generative_model_has_a_prior_and_samples_images(name):
    build, shape = MODELS[name]
    model = build().eval()
    assert isinstance(model, Generative) and isinstance(model.prior, Prior)
    codes = model.prior.sample(5, generator=torch.Generator().manual_seed(0), device=model.device)
    assert codes.shape == (5, model.prior.dim)
    condition = CONDITIONS[name](model) if name in CONDITIONS else None
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    images = model.sample(5, condition, generator=g())
    assert images.shape == (5, *shape) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, model.sample(5, condition, generator=g()))  # the same generator state, the same images
    if model.needs_condition:
        with pytest.raises(ValueError, match="condition|labels"):
            model.sample(5, generator=g())
    else:  # the supervised AAE without labels: the whole mixture
        assert model.sample(5, generator=g()).shape == (5, *shape)
    rows = model.example_conditions()
    assert (rows is None) == (name in ("vae", "aae"))


def test_a_plain_autoencoder_is_not_generative():
    from ae_lightning.models import Autoencoder

    assert not isinstance(Autoencoder(MLPEncoder(SHAPE, [4]), MLPDecoder(SHAPE, [4])), Generative)


def test_the_vae_samples_decoded_standard_normal_draws():
    """``sample`` decodes ``prior.sample`` with the same generator: N(0, I) codes, drawn in the same order."""
    model = vae().eval()
    assert isinstance(model.prior, GaussianPrior) and model.prior.dim == 3 and model.prior.std == 1.0
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(model.prior.sample(7, generator=torch.Generator().manual_seed(4)), z)
    assert torch.equal(model.sample(7, generator=torch.Generator().manual_seed(4)), model.decode(z))


def test_the_supervised_aae_draws_each_row_from_its_component():
    model = aae(supervised=True).eval()
    labels = torch.tensor([2, 0, 1])
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    codes = model.prior.sample(3, labels=labels, generator=g())
    assert torch.equal(model.sample(3, labels, generator=g()), model.decode(codes))
    theta = labels * 2 * torch.pi / 3  # component k sits at angle 2πk/3
    toward = (codes[:, 0] * torch.cos(theta) + codes[:, 1] * torch.sin(theta)) / codes.norm(dim=1)
    assert (toward > 0.9).all(), toward


@pytest.mark.parametrize("build", [vae, cvae, aae, caae], ids=["vae", "cvae", "aae", "caae"])
def test_the_prior_adds_nothing_to_the_state_dict(build):
    """Shipped weights and users' checkpoints keep loading: the model's entries are exactly its nets'."""
    model = build()
    nets = {name: module for name, module in model.named_children()}
    expected = {f"{name}.{key}" for name, module in nets.items() for key in module.state_dict()}
    assert set(model.state_dict()) == expected
    assert "prior" not in nets and "prior" not in model.hparams


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, **kwargs)


def _digits(n: int = 32, classes: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(n, *SHAPE, generator=g), torch.arange(n) % classes), batch_size=16)


@pytest.mark.parametrize("supervised", [False, True])
def test_the_callback_draws_the_aae_grids(tmp_path, supervised):
    """The AAE draws no grid itself; GenerationGrids draws its prior samples (and, supervised, one row per component)."""
    model = aae(supervised)
    _trainer(tmp_path / "without", max_epochs=1, limit_train_batches=1).fit(model, _digits(), _digits())
    assert not (tmp_path / "without" / "images").exists()
    cb = GenerationGrids(num_samples=9, samples_per_label=4)
    _trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[cb]).fit(aae(supervised), _digits(), _digits())
    names = {p.name for p in (tmp_path / "images").iterdir()}
    expected = {"val_samples_epoch000.png"} | ({"val_samples_by_label_epoch000.png"} if supervised else set())
    assert names == expected  # no interpolation or latent views: those are the VAE family's
    with Image.open(tmp_path / "images" / "val_samples_epoch000.png") as im:  # 3 × 3 samples of 8 px + padding
        assert im.size == (3 * 10 + 2, 3 * 10 + 2)
    if supervised:
        with Image.open(tmp_path / "images" / "val_samples_by_label_epoch000.png") as im:  # 3 components × 4
            assert im.size == (4 * 10 + 2, 3 * 10 + 2)


def test_the_labelled_grid_shares_the_prior_noise_across_rows(monkeypatch):
    """Every row of ``val/samples_by_label`` is drawn from the same seed: for the CVAE, the same codes in every row."""
    from ae_lightning.callbacks import generation

    logged = {}
    monkeypatch.setattr(generation, "log_image", lambda trainer, key, grid, caption="": logged.update({key: grid}))
    model = cvae().eval()
    GenerationGrids(samples_per_label=4, seed=3)._samples(None, model)
    assert set(logged) == {"val/samples_by_label"}
    z = model.prior.sample(4, generator=torch.Generator().manual_seed(3)).repeat(3, 1)  # (12, D)
    images = model.decode(z, torch.arange(3).repeat_interleave(4))
    assert torch.allclose(logged["val/samples_by_label"], generation._grid(images, 4), atol=1e-6)


class _Faces(Dataset):
    """Random faces with UTKFace's labels: ``(image, {"age_group", "gender"})``."""

    def __init__(self, n: int) -> None:
        self.x = torch.rand(n, *FACE, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], {"age_group": torch.tensor(i % 3), "gender": torch.tensor(i % 2)}


def test_the_callback_logs_the_caae_samples_and_its_age_progression(tmp_path):
    """The CAAE's extra_grids hook (age progression of validation faces) and its labelled prior samples, one row per
    (gender, age group)."""
    model = caae()
    assert model.extra_grids() == {}  # no validation face seen yet
    cb = GenerationGrids(samples_per_label=2)
    loader = DataLoader(_Faces(8), batch_size=4)
    _trainer(tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[cb]).fit(model, loader, loader)
    images = tmp_path / "images"
    assert {p.name for p in images.iterdir()} == {"val_samples_by_label_epoch000.png", "val_age_progression_epoch000.png"}
    with Image.open(images / "val_samples_by_label_epoch000.png") as im:  # 2 genders × 3 age groups, 2 columns
        assert im.size == (2 * 18 + 2, 6 * 18 + 2)
    with Image.open(images / "val_age_progression_epoch000.png") as im:  # 2 faces: the input, then 3 age groups
        assert im.size == (4 * 18 + 2, 2 * 18 + 2)
    assert set(model.extra_grids()) == {"val/age_progression"}
