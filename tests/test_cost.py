import pytest
import torch

from mobilenet.net.cost import cost_report, layer_costs, separable_vs_standard
from mobilenet.net.model import MobileNetConfig, MobileNetV1, get_config


def test_paper_totals_at_alpha_1_224():
    report = cost_report()
    assert report["mult_adds"] == 568_740_352
    assert report["params"] == 4_231_976
    assert sum(p.numel() for p in MobileNetV1().parameters()) == 4_231_976


# Tables 6 and 7: (α, ρ, mult-adds in M, params in M)
PAPER_ROWS = [
    (1.0, 224, 569, 4.2), (0.75, 224, 325, 2.6), (0.5, 224, 149, 1.3), (0.25, 224, 41, 0.5),
    (1.0, 192, 418, 4.2), (1.0, 160, 290, 4.2), (1.0, 128, 186, 4.2),
]


@pytest.mark.parametrize("alpha, rho, mult_adds_m, params_m", PAPER_ROWS)
def test_tables_6_and_7(alpha, rho, mult_adds_m, params_m):
    report = cost_report(MobileNetConfig(width_mult=alpha, resolution=rho))
    assert abs(report["mult_adds"] / 1e6 - mult_adds_m) <= 1.0
    assert abs(report["params"] / 1e6 - params_m) <= 0.05


def test_table_2_shares():
    shares = cost_report()["by_type"]
    expected = {"pointwise": (94.86, 74.59), "depthwise": (3.06, 1.06), "conv": (1.91, 0.02), "fc": (0.18, 24.33)}
    for kind, (ma, params) in expected.items():
        assert shares[kind]["mult_adds_pct"] == pytest.approx(ma, abs=0.01)
        assert shares[kind]["params_pct"] == pytest.approx(params, abs=0.01)
    assert sum(s["mult_adds_pct"] for s in shares.values()) == pytest.approx(100)


def test_table_4_full_conv():
    report = cost_report(full_conv=True)
    assert report["mult_adds"] == 4_867_293_184
    assert report["params"] / 1e6 == pytest.approx(29.3, abs=0.05)
    assert report["network"]["standard"]["mult_adds"] == 4_867_293_184
    assert len([r for r in report["layers"] if r["type"] in ("conv", "fc")]) == 15


def test_table_3_single_layer():
    t3 = separable_vs_standard(14, 14, 512, 512)
    assert round(t3["standard"]["mult_adds"] / 1e6) == 462
    assert round(t3["standard"]["params"] / 1e6, 2) == 2.36
    assert round(t3["separable"]["mult_adds"] / 1e6, 1) == 52.3
    assert round(t3["separable"]["params"] / 1e6, 2) == 0.27
    assert t3["ratio"] == pytest.approx(1 / 512 + 1 / 9)
    assert 8 < t3["reduction"] < 9  # the seed's "1/8 to 1/9"
    # worked by hand (paper §3): D_K·D_K·M·N·D_F·D_F, and D_K·D_K·M·D_F·D_F + M·N·D_F·D_F
    # = 3·3·512·512·14·14, and 3·3·512·14·14 + 512·512·14·14; params 3·3·512·512, and 3·3·512 + 512·512
    assert (t3["standard"]["mult_adds"], t3["separable"]["mult_adds"]) == (462_422_016, 52_283_392)
    assert (t3["standard"]["params"], t3["separable"]["params"]) == (2_359_296, 266_752)
    layer = cost_report()["layer"]  # the report's Table 3 is this layer's
    assert (layer["standard"]["mult_adds"], layer["separable"]["mult_adds"]) == (462_422_016, 52_283_392)


def _measure(model: torch.nn.Module, size: int, in_channels: int) -> dict[str, tuple[int, int]]:
    """Mult-adds and parameters of each conv/FC, counted by hooks on a real forward pass."""
    counts = {}
    owners = {m: name for name, m in model.named_modules()}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            mult_adds = output[0].numel() * k
        else:
            mult_adds = module.in_features * module.out_features
        counts[owners[module]] = mult_adds

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, in_channels, size, size))
    for h in handles:
        h.remove()
    params = {}
    for name, block in model.features.named_children():
        params[name] = sum(p.numel() for p in block.parameters())
    params["fc"] = sum(p.numel() for p in model.classifier.parameters())
    return {name: (counts[f"features.{name}.0" if name != "fc" else "classifier"], params[name])
            for name in params}


@pytest.mark.parametrize("alpha, rho, classes, channels", [
    (1.0, 224, 1000, 3), (0.75, 192, 10, 1), (0.5, 100, 7, 3), (0.25, 33, 2, 1), (1.3, 64, 3, 3),
])
def test_report_agrees_with_the_real_module(alpha, rho, classes, channels):
    cfg = MobileNetConfig(num_classes=classes, width_mult=alpha, resolution=rho, in_channels=channels)
    model = MobileNetV1.from_config(cfg)
    measured = _measure(model, rho, channels)
    reported = {r.name: (r.mult_adds, r.params) for r in layer_costs(cfg) if r.type != "pool"}
    assert reported == measured
    assert sum(p for _, p in reported.values()) == sum(p.numel() for p in model.parameters())


def test_json_report_shape():
    report = cost_report(get_config("mobilenet_v1_0.5_160", num_classes=10))
    assert isinstance(report["mult_adds"], int) and isinstance(report["params"], int)
    assert set(report["by_type"]) == {"conv", "depthwise", "pointwise", "fc"}
    for entry in report["by_type"].values():
        assert set(entry) >= {"mult_adds", "params", "mult_adds_pct", "params_pct"}
    first = report["layers"][0]
    assert first["name"] == "conv1" and first["input_shape"] == (160, 160, 3)
    assert first["output_shape"] == (80, 80, 16)


@pytest.mark.parametrize("alpha, rho, channels", [(1.0, 224, 3), (0.25, 33, 1)])
def test_peak_activations_are_the_largest_layer_input_and_output(alpha, rho, channels):
    """Against the real module: the largest input + output of any conv, pool or FC at batch 1."""
    from mobilenet.net.cost import peak_activation_bytes

    cfg = MobileNetConfig(num_classes=10, width_mult=alpha, resolution=rho, in_channels=channels)
    model = MobileNetV1.from_config(cfg).eval()
    sizes = []

    def hook(module, inputs, output):
        sizes.append(4 * (inputs[0].numel() + output.numel()))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.AdaptiveAvgPool2d))]
    with torch.no_grad():
        model(torch.randn(1, channels, rho, rho))
    for h in handles:
        h.remove()
    assert len(sizes) == 29 and peak_activation_bytes(layer_costs(cfg)) == max(sizes)
    assert cost_report(cfg)["peak_activation_bytes"] == max(sizes)


def test_an_evaluation_batch_follows_the_networks_memory():
    """256 images at the sizes one trains, fewer where that many would pass EVAL_MEMORY at the
    network's largest layer: a config.json edited to ρ 4096 no longer asks for 17 GB."""
    from mobilenet.net.cost import EVAL_MEMORY, eval_batch_size, layer_costs, peak_activation_bytes

    for config in (MobileNetConfig(), MobileNetConfig(resolution=64, in_channels=1, num_classes=10)):
        assert eval_batch_size(config, 256) == 256
    huge = MobileNetConfig(width_mult=0.25, resolution=4096, in_channels=1, num_classes=10)
    size = eval_batch_size(huge, 256)
    assert 1 <= size < 256 and size * peak_activation_bytes(layer_costs(huge)) <= EVAL_MEMORY
    assert eval_batch_size(MobileNetConfig(width_mult=4.0, resolution=4096), 256) == 1  # one image, whatever it needs
