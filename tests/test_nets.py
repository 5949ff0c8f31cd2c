"""Nets: output shapes, tied weights, the deep stack's layer sizes and the wrong-shape errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ae_lightning.models import Autoencoder
from ae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, UNetDecoder, UNetEncoder
from ae_lightning.nets.common import check_image_shape, make_activation

DEEP = [1000, 500, 250, 30]


# --- MLP -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 12)])
def test_classic_mlp_shapes_and_sigmoid_range(shape):
    enc, dec = MLPEncoder(shape, [64]), MLPDecoder(shape, [64])
    x = torch.rand(5, *shape)
    code = enc(x)
    assert code.shape == (5, 64)
    assert 0 < code.min() and code.max() < 1  # y = σ(Wx + b)
    out = dec(code)
    assert out.shape == (5, *shape)
    assert 0 < out.min() and out.max() < 1  # x' = σ'(W'y + b')


def test_deep_stack_784_1000_500_250_30():
    enc = MLPEncoder((1, 28, 28), DEEP, activation="relu", code_activation=None)
    dec = MLPDecoder((1, 28, 28), DEEP, activation="relu")
    assert [tuple(lin.weight.shape) for lin in enc.linears] == [(1000, 784), (500, 1000), (250, 500), (30, 250)]
    assert [tuple(lin.weight.shape) for lin in dec.linears] == [(250, 30), (500, 250), (1000, 500), (784, 1000)]
    x = torch.rand(3, 1, 28, 28)
    code = enc(x)
    assert code.shape == (3, 30)
    assert (code < 0).any()  # linear code layer: no squashing
    assert dec(code).shape == (3, 1, 28, 28)


def test_tied_weights_share_storage_and_gradient():
    enc = MLPEncoder((1, 8, 8), [16])
    dec = MLPDecoder((1, 8, 8), [16], tied=True)
    model = Autoencoder(enc, dec)  # ties the decoder to the encoder
    # W' = Wᵀ is a view of the encoder's weight, not a copy
    (w_dec,) = dec._weights()
    assert w_dec.shape == (64, 16)
    assert w_dec.data_ptr() == enc.linears[0].weight.data_ptr()
    assert torch.equal(w_dec, enc.linears[0].weight.t())
    # the decoder owns only its biases; the model holds the shared weight once
    assert [tuple(p.shape) for p in dec.parameters()] == [(64,)]
    untied = Autoencoder(MLPEncoder((1, 8, 8), [16]), MLPDecoder((1, 8, 8), [16]))
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in untied.parameters()) - 64 * 16
    assert not any("decoder" in k and "weight" in k for k in model.state_dict())

    # a loss on the decoder alone sends gradient into the encoder's weight
    code = torch.rand(4, 16)
    dec(code).sum().backward()
    grad = enc.linears[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0

    # changing W changes the decoder
    before = dec(code).detach()
    with torch.no_grad():
        enc.linears[0].weight.mul_(2)
    assert not torch.allclose(dec(code), before)


def test_tied_weights_survive_deepcopy_and_state_dict_load():
    def build():
        return Autoencoder(MLPEncoder((1, 8, 8), [16, 4]), MLPDecoder((1, 8, 8), [16, 4], tied=True))

    a, b = build(), build()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(b(x).reconstruction, a(x).reconstruction)

    c = copy.deepcopy(a)
    with torch.no_grad():
        c.encoder.linears[0].weight.zero_()
    # the copy is tied to its own encoder, not to the original's
    assert c.decoder._weights()[-1].data_ptr() == c.encoder.linears[0].weight.data_ptr()
    assert a.encoder.linears[0].weight.abs().sum() > 0


def test_tied_decoder_errors():
    dec = MLPDecoder((1, 8, 8), [16], tied=True)
    with pytest.raises(RuntimeError, match="tie_to"):
        dec(torch.rand(1, 16))
    with pytest.raises(ValueError, match="same widths"):
        dec.tie_to(MLPEncoder((1, 8, 8), [32]))
    with pytest.raises(ValueError, match="image_shape"):
        dec.tie_to(MLPEncoder((1, 4, 16), [16]))
    with pytest.raises(ValueError, match="MLPEncoder"):
        Autoencoder(ConvEncoder((1, 8, 8), [4]), dec)


@pytest.mark.parametrize("bad", [[], [0, 4]])
def test_mlp_rejects_bad_widths(bad):
    with pytest.raises(ValueError, match="widths"):
        MLPEncoder((1, 8, 8), bad)
    with pytest.raises(ValueError, match="widths"):
        MLPDecoder((1, 8, 8), bad)


# --- conv ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, channels, kw",
    [
        ((1, 28, 28), [32, 64], {}),
        ((3, 32, 32), [8, 16, 32], {}),
        ((1, 16, 48), [4, 8], {}),  # non-square
        ((3, 16, 16), [4, 8], {"downsample": "stride", "upsample": "transpose", "norm": "batch"}),
        ((1, 15, 9), [4, 4], {"downsample": "none", "upsample": "none", "norm": "group"}),  # full resolution
    ],
)
def test_conv_shapes(shape, channels, kw):
    c, h, w = shape
    down = {k: v for k, v in kw.items() if k in ("downsample", "norm")}
    up = {k: v for k, v in kw.items() if k in ("upsample", "norm")}
    enc, dec = ConvEncoder(shape, channels, **down), ConvDecoder(shape, channels, **up)
    depth = 0 if kw.get("downsample") == "none" else len(channels)
    expected = (channels[-1], h // 2**depth, w // 2**depth)
    assert enc.feature_shape == expected
    x = torch.rand(2, *shape)
    code = enc(x)
    assert code.shape == (2, *expected)
    out = dec(code)
    assert out.shape == (2, *shape)
    assert out.min() >= 0 and out.max() <= 1  # sigmoid output


def test_conv_vector_code():
    enc = ConvEncoder((3, 32, 32), [8, 16], code_dim=10)
    dec = ConvDecoder((3, 32, 32), [8, 16], code_dim=10, output_activation=None)
    code = enc(torch.rand(4, 3, 32, 32))
    assert code.shape == (4, 10)
    out = dec(code)
    assert out.shape == (4, 3, 32, 32)
    assert isinstance(dec.body[-1], nn.Identity)  # no output activation (a residual denoiser's noise estimate)


def test_gondara_denoiser_layout():
    """conv 3×3/64 → max-pool 2 → conv 3×3/64 → max-pool 2, mirrored with up-sampling, sigmoid."""
    enc = ConvEncoder((1, 64, 64), [64, 64])
    dec = ConvDecoder((1, 64, 64), [64, 64])
    kinds = [type(m) for m in enc.features if not isinstance(m, nn.Identity)]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    convs = [m for m in enc.features if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size) for m in convs] == [(64, (3, 3)), (64, (3, 3))]
    assert sum(isinstance(m, nn.Upsample) for m in dec.body) == 2
    assert isinstance(dec.body[-1], nn.Sigmoid)
    code = enc(torch.rand(2, 1, 64, 64))
    assert code.shape == (2, 64, 16, 16)
    assert dec(code).shape == (2, 1, 64, 64)


@pytest.mark.parametrize("net", [ConvEncoder, ConvDecoder])
@pytest.mark.parametrize("shape, channels, factor", [((1, 28, 28), [8, 16, 32], 8), ((3, 64, 30), [4, 4], 4)])
def test_conv_wrong_shape_fails_at_construction(net, shape, channels, factor):
    with pytest.raises(ValueError) as err:
        net(shape, channels)
    msg = str(err.value)
    assert "x".join(map(str, shape)) in msg  # names the shape
    assert f"divisible by 2**depth = {factor}" in msg  # and the rule
    assert net.__name__ in msg and "\n" not in msg


@pytest.mark.parametrize("bad", [(28, 28), (1, 0, 28), (1, 28, 28, 1)])
def test_bad_image_shape(bad):
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        check_image_shape(bad)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ConvEncoder(bad, [4])


def test_conv_rejects_empty_channels_and_unknown_norm():
    with pytest.raises(ValueError, match="at least one"):
        ConvEncoder((1, 8, 8), [])
    with pytest.raises(ValueError, match="at least one"):
        ConvDecoder((1, 8, 8), [])
    with pytest.raises(ValueError, match="unknown norm"):
        ConvEncoder((1, 8, 8), [4], norm="layer")


def test_make_activation():
    assert isinstance(make_activation(None), nn.Identity)
    assert isinstance(make_activation("leaky_relu"), nn.LeakyReLU)
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        make_activation("swishy")


# --- U-Net ------------------------------------------------------------------------------------
def unet(shape=(1, 64, 64), channels=(4, 8, 16, 32), blocks=1):
    return UNetEncoder(shape, channels, blocks), UNetDecoder(shape, channels, blocks)


def test_unet_code_is_the_feature_maps_and_the_decoder_returns_the_image_shape():
    enc, dec = unet()
    code = enc(torch.rand(3, 1, 64, 64))
    assert [tuple(c.shape) for c in code] == [(3, 4, 64, 64), (3, 8, 32, 32), (3, 16, 16, 16), (3, 32, 8, 8)]
    assert dec(code).shape == (3, 1, 64, 64)
    assert enc.size_multiple == dec.size_multiple == 8
    assert res_blocks(enc) == 4 and res_blocks(dec) == 3  # one block per level; none at the decoder's bottleneck
    rgb_enc, rgb_dec = unet((3, 32, 48), (4, 8), blocks=2)
    assert rgb_dec(rgb_enc(torch.rand(2, 3, 32, 48))).shape == (2, 3, 32, 48)


def res_blocks(net) -> int:
    from ae_lightning.nets.unet import ResBlock

    return sum(isinstance(m, ResBlock) for m in net.modules())


def test_unet_runs_at_any_multiple_of_its_size_and_the_module_pads_other_sizes():
    from ae_lightning.models import DenoisingAutoencoder
    from ae_lightning.noise import Gaussian

    enc, dec = unet()
    with torch.no_grad():
        assert dec(enc(torch.rand(1, 1, 96, 136))).shape == (1, 1, 96, 136)  # fully convolutional
        model = DenoisingAutoencoder(enc, dec, noise=Gaussian(0.1), residual=True).eval()
        assert model.size_multiple() == 8
        for h, w in [(64, 64), (65, 97), (7, 200), (130, 33)]:
            assert model.reconstruct_full(torch.rand(2, 1, h, w)).shape == (2, 1, h, w)


def test_unet_learns_to_denoise_a_little():
    """A few Adam steps of a residual U-Net on one noisy batch: the loss falls (gradients reach every level)."""
    torch.manual_seed(0)
    enc, dec = unet((1, 16, 16), (4, 8, 8))
    clean = torch.rand(4, 1, 16, 16).cumsum(-1) / 16  # smooth ramps
    noisy = clean + 0.2 * torch.randn_like(clean)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], 3e-3)
    losses = []
    for _ in range(25):
        loss = ((noisy - dec(enc(noisy)) - clean) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*enc.parameters(), *dec.parameters()])


@pytest.mark.parametrize("make, match", [
    (lambda: UNetEncoder((1, 60, 60), [4, 8, 16, 32]), r"1x60x60 does not fit a U-Net with 4 levels.*levels - 1\) = 8"),
    (lambda: UNetDecoder((1, 64, 36), [4, 8, 16, 32]), "1x64x36 does not fit"),
    (lambda: UNetEncoder((1, 64, 64), []), "one positive width per level"),
    (lambda: UNetEncoder((1, 64, 64), [4, 8], blocks=0), "blocks must be >= 1"),
])
def test_unet_bad_arguments_fail_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unet_decoder_names_a_mismatched_encoder():
    enc = UNetEncoder((1, 64, 64), [4, 8, 16])
    dec = UNetDecoder((1, 64, 64), [4, 8, 16, 32])
    with pytest.raises(ValueError, match="takes the 4 feature maps of a 4-level UNetEncoder, got 3"):
        dec(enc(torch.rand(1, 1, 64, 64)))
