import json

import pytest
import torch

import mobilenet
from mobilenet.net.depthwise import SMALL, DepthwiseConv2d
from mobilenet.net.model import (
    TABLE1, MobileNetConfig, MobileNetV1, config_from_timm_state_dict, create_model, list_models,
    timm_to_mobilenet_state_dict,
)


def test_table1_has_28_layers_and_row_26_stride_1():
    assert len(TABLE1) + 1 == 28  # 1 + 2×13 body layers, then the FC
    assert TABLE1[25] == ("depthwise", 1, 1024)  # the paper misprints s2 here


def test_registry_has_the_papers_16_variants():
    names = list_models()
    assert len(names) == 16 and "mobilenet_v1_0.75_192" in names and "mobilenet_v1_1.0_224" in names
    cfg = mobilenet.get_config("mobilenet_v1_0.75_192")
    assert (cfg.width_mult, cfg.resolution) == (0.75, 192)


@pytest.mark.parametrize("name", list_models())
def test_output_shape_of_every_variant(name):
    model = create_model(name, num_classes=7).eval()
    r = model.config.resolution
    with torch.no_grad():
        assert model(torch.randn(1, 3, r, r)).shape == (1, 7)


@pytest.mark.parametrize("size", [100, 33, 32])
def test_odd_input_sizes(size):
    model = MobileNetV1(num_classes=5, width_mult=0.25).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
        assert model.forward_features(torch.randn(2, 3, size, size)).shape == (2, 256)


def test_every_conv_has_bn_and_activation_but_not_the_fc():
    model = MobileNetV1(activation="relu6")
    for block in model.features:
        conv, bn, act = block
        assert isinstance(conv, torch.nn.Conv2d) and conv.bias is None
        assert isinstance(bn, torch.nn.BatchNorm2d) and isinstance(act, torch.nn.ReLU6)
    assert isinstance(model.classifier, torch.nn.Linear)
    depthwise = [b[0] for b in model.features if b[0].groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_width_multiplier_uses_int_c_times_alpha():
    model = MobileNetV1(width_mult=0.3)
    assert model.features.conv1[0].out_channels == int(32 * 0.3)
    assert model.classifier.in_features == int(1024 * 0.3)


def test_backward_gives_finite_gradients():
    model = MobileNetV1(num_classes=4, width_mult=0.25, in_channels=1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(3, 1, 64, 64)), torch.tensor([0, 1, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("size, stride", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (3, 2), (SMALL, 2)])
def test_depthwise_filter_gradient_on_small_maps_is_the_convolutions(size, stride):
    """Trained on a map under SMALL×SMALL, a depthwise layer's filter gradient comes from
    depthwise.filter_grad. It equals the plain convolution's, computed in float64, within
    what float32 sums of n products can lose: (n + 1)·2⁻²⁴·Σ|x·g|. The input's gradient is
    the convolution's own."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(24, 3, stride).train()
    x = torch.randn(8, 24, size, size, requires_grad=True)
    y = conv(x)
    assert type(y.grad_fn).__name__ == ("_DepthwiseConvBackward" if size < SMALL else "ConvolutionBackward0")
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, conv.weight], g)

    def plain(x, g):
        w = conv.weight.detach().double().requires_grad_()
        out = torch.nn.functional.conv2d(x.detach().double().requires_grad_(), w, None, stride, 1, 1, 24)
        return torch.autograd.grad(out, [w], g.double())[0]

    terms = 8 * y.shape[2] * y.shape[3]
    bound = (terms + 1) * 2.0 ** -24 * plain(x.abs(), g.abs())
    assert ((gw.double() - plain(x, g)).abs() <= bound).all()
    assert torch.equal(gx, torch.nn.grad.conv2d_input(x.shape, conv.weight, g, stride, 1, groups=24))
    with torch.no_grad():
        assert torch.equal(conv(x), torch.nn.functional.conv2d(x, conv.weight, None, stride, 1, 1, 24))
    assert type(conv.eval()(x).grad_fn).__name__ == "ConvolutionBackward0"  # traced and exported as it is


def test_eval_is_deterministic_and_state_dict_round_trips():
    torch.manual_seed(0)
    a = MobileNetV1(num_classes=3, width_mult=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ya = a(x)
        assert torch.equal(ya, a(x))
        b = MobileNetV1(num_classes=3, width_mult=0.5).eval()
        assert not torch.equal(b(x), ya)
        b.load_state_dict(a.state_dict())
        assert torch.equal(b(x), ya)


def test_forward_is_head_of_features_and_reset_classifier():
    model = MobileNetV1(num_classes=10, width_mult=0.25).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), model.classifier(model.forward_features(x)))
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True),
                           model.forward_features(x))
    model.reset_classifier(4)
    assert model(x).shape == (1, 4) and model.config.num_classes == 4


def test_config_round_trips_through_json_and_builds_the_model():
    cfg = MobileNetConfig(num_classes=10, width_mult=0.75, resolution=96, in_channels=1,
                          dropout=0.1, activation="relu6")
    text = cfg.to_json()
    assert MobileNetConfig.from_json(text) == cfg
    assert json.loads(text)["width_mult"] == 0.75
    model = MobileNetV1.from_config(cfg)
    assert model.config == cfg and model.features.conv1[0].in_channels == 1


@pytest.mark.parametrize("kwargs, word", [
    ({"width_mult": 0}, "width_mult"), ({"width_mult": -1}, "width_mult"),
    ({"width_mult": float("nan")}, "width_mult"), ({"num_classes": 0}, "num_classes"),
    ({"activation": "gelu"}, "activation"), ({"in_channels": 2.5}, "in_channels"),
    ({"resolution": 16}, "resolution"),
])
def test_bad_config_raises_value_error_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MobileNetV1(**kwargs)


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        MobileNetConfig.from_dict({"width": 1.0})


def test_equal_to_timm_mobilenetv1_100_with_relu6():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    # Random BN statistics, so the check covers them too.
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    state = reference.state_dict()
    cfg = config_from_timm_state_dict(state)
    assert cfg == MobileNetConfig(activation="relu6")
    ours = MobileNetV1.from_config(cfg).eval()
    ours.load_state_dict(timm_to_mobilenet_state_dict(state), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.forward_features(x), reference.forward_head(
            reference.forward_features(x), pre_logits=True), atol=1e-5, rtol=0)


def test_timm_mapping_rejects_other_state_dicts():
    with pytest.raises(ValueError, match="conv_stem"):
        timm_to_mobilenet_state_dict({"fc.weight": torch.zeros(1)})
