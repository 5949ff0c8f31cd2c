"""Nets: output shapes, tied weights, the deep stack's layer sizes and the wrong-shape errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ae_lightning.models import Autoencoder
from ae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
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
