"""What MobileNet V1 costs: parameters and mult-adds, layer by layer, from TABLE1.

Pure arithmetic over the same table that builds the module (model.TABLE1), so the
report and the network cannot drift apart; tests cross-check both on a real forward
pass. Counting follows the paper (§3, Tables 1-4, 6, 7):
- mult-adds of every conv and the FC; BN, ReLU and the pool cost nothing;
- output size ceil(H / stride), padding 1 on the 3×3 convs;
- Table 2 shares count conv and FC weights only; `params` counts every tensor the
  module trains (conv weights, BN scale and shift, FC weight and bias).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .config import KERNEL, TABLE1, MobileNetConfig, channels, get_config, layer_names, list_models

__all__ = ["LayerCost", "layer_costs", "by_type", "separable_vs_standard", "peak_activation_bytes", "state_bytes",
           "cost_report", "format_report", "models_table"]

TYPES = ("conv", "depthwise", "pointwise", "fc")


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str  # conv, depthwise, pointwise, pool or fc
    stride: int
    input_shape: tuple[int, int, int]  # H, W, C
    filter_shape: tuple[int, ...]  # (k, k, c_in, c_out); depthwise (k, k, c); fc (c_in, c_out)
    output_shape: tuple[int, int, int]
    weights: int  # conv or FC weights: what Table 2 counts
    params: int  # weights + BN scale/shift (conv) or bias (fc)
    mult_adds: int


def _conv(name, kind, stride, h, w, c_in, c_out) -> LayerCost:
    k = KERNEL[kind]
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    if kind == "depthwise":
        shape, weights = (k, k, c_in), k * k * c_in
    else:
        shape, weights = (k, k, c_in, c_out), k * k * c_in * c_out
    return LayerCost(name, kind, stride, (h, w, c_in), shape, (oh, ow, c_out),
                     weights, weights + 2 * c_out, weights * oh * ow)


def layer_costs(config: MobileNetConfig | None = None, full_conv: bool = False) -> list[LayerCost]:
    """One LayerCost per row of Table 1 (pool and FC included) for `config`.

    full_conv=True gives Table 4's "Conv MobileNet": each depthwise/pointwise pair
    replaced by one standard 3×3 conv with the depthwise stride.
    """
    cfg = config or MobileNetConfig()
    h = w = cfg.resolution
    c_in, rows, dw_stride = cfg.in_channels, [], 1
    for name, (kind, stride, c) in zip(layer_names(), TABLE1):
        c_out = channels(c, cfg.width_mult)
        if full_conv and kind == "depthwise":
            dw_stride = stride  # merged into the pointwise row that follows
            continue
        if full_conv and kind == "pointwise":
            name, kind, stride = name.replace("conv_pw_", "conv_"), "conv", dw_stride
        row = _conv(name, kind, stride, h, w, c_in, c_out)
        rows.append(row)
        h, w, c_in = row.output_shape
    rows.append(LayerCost("avg_pool", "pool", 1, (h, w, c_in), (h, w), (1, 1, c_in), 0, 0, 0))
    fc_weights = c_in * cfg.num_classes
    rows.append(LayerCost("fc", "fc", 1, (1, 1, c_in), (c_in, cfg.num_classes), (1, 1, cfg.num_classes),
                          fc_weights, fc_weights + cfg.num_classes, fc_weights))
    return rows


def by_type(layers: list[LayerCost]) -> dict[str, dict]:
    """Table 2: mult-adds and conv/FC weights per layer type, with their shares in %."""
    total_ma = sum(r.mult_adds for r in layers) or 1
    total_w = sum(r.weights for r in layers) or 1
    out = {}
    for t in TYPES:
        ma = sum(r.mult_adds for r in layers if r.type == t)
        w = sum(r.weights for r in layers if r.type == t)
        out[t] = {"mult_adds": ma, "params": w,
                  "mult_adds_pct": 100 * ma / total_ma, "params_pct": 100 * w / total_w}
    return out


def separable_vs_standard(h: int, w: int, c_in: int, c_out: int, k: int = 3) -> dict:
    """Table 3: one layer as a standard k×k conv and as depthwise + pointwise."""
    std_w = k * k * c_in * c_out
    sep_w = k * k * c_in + c_in * c_out
    std, sep = std_w * h * w, sep_w * h * w
    return {
        "input_shape": [h, w, c_in], "kernel": k, "out_channels": c_out,
        "standard": {"mult_adds": std, "params": std_w},
        "separable": {"mult_adds": sep, "params": sep_w},
        "ratio": sep / std,  # = 1/N + 1/D_K² (paper §3.1)
        "reduction": std / sep,
    }


def _totals(layers: list[LayerCost]) -> dict:
    return {"mult_adds": sum(r.mult_adds for r in layers), "params": sum(r.params for r in layers)}


def peak_activation_bytes(layers: list[LayerCost]) -> int:
    """The largest input plus output of any layer at batch 1, in float32: the working memory
    a device needs to run the network one layer at a time (a microcontroller's RAM)."""
    return 4 * max(math.prod(r.input_shape) + math.prod(r.output_shape) for r in layers)


EVAL_MEMORY = 2 << 30  # an evaluation batch: its images and the network's working memory, at most


def eval_batch_size(config: MobileNetConfig, largest: int) -> int:
    """`largest` images per evaluation batch, or fewer where that many would pass
    EVAL_MEMORY at the network's largest layer (a large ρ): memory follows the network."""
    return max(1, min(largest, EVAL_MEMORY // peak_activation_bytes(layer_costs(config))))


def state_bytes(config: MobileNetConfig) -> int:
    """Bytes of the module's state dict in float32: its params, and each BN's running mean
    and variance (two per channel, as its scale and shift) and int64 step count. What a
    weights file of this config holds, less its header."""
    layers = layer_costs(config)
    convs = [r for r in layers if r.type not in ("pool", "fc")]
    floats = sum(r.params for r in layers) + sum(r.params - r.weights for r in convs)
    return 4 * floats + 8 * len(convs)


def cost_report(config: MobileNetConfig | None = None, full_conv: bool = False) -> dict:
    """The whole report as plain data (JSON-ready): totals, layers, Table 2, Tables 3-4."""
    cfg = config or MobileNetConfig()
    layers = layer_costs(cfg, full_conv=full_conv)
    separable, standard = _totals(layer_costs(cfg)), _totals(layer_costs(cfg, full_conv=True))
    # Table 3's layer: the input of the first of the five repeated 512-channel pairs.
    first_512 = next(r for r in layer_costs(cfg) if r.type == "depthwise" and r.filter_shape[2] ==
                     channels(512, cfg.width_mult))
    h, w, c = first_512.input_shape
    return {
        "config": cfg.to_dict(),
        "full_conv": full_conv,
        **_totals(layers),
        "peak_activation_bytes": peak_activation_bytes(layers),
        "layers": [asdict(r) for r in layers],
        "by_type": by_type(layers),
        "network": {"separable": separable, "standard": standard,
                    "reduction": standard["mult_adds"] / separable["mult_adds"]},
        "layer": separable_vs_standard(h, w, c, c),
    }


# --- human-readable report --------------------------------------------------------

_KIND_LABEL = {"conv": "Conv", "depthwise": "Conv dw", "pointwise": "Conv", "pool": "Avg Pool", "fc": "FC"}
_TYPE_LABEL = {"pointwise": "Conv 1×1", "depthwise": "Conv DW 3×3", "conv": "Conv 3×3", "fc": "Fully Connected"}


def _x(shape) -> str:
    return "×".join(str(s) for s in shape)


def _filter(r: dict) -> str:
    if r["type"] == "depthwise":
        return _x(r["filter_shape"]) + " dw"
    if r["type"] == "pool":
        return "Pool " + _x(r["filter_shape"])
    return _x(r["filter_shape"])


def _m(n: int, digits: int = 1) -> str:
    return f"{n / 1e6:,.{digits}f}M"


def format_report(report: dict) -> str:
    """Table 1 with the numbers filled in, then Table 2, then standard vs separable."""
    cfg = report["config"]
    title = "Conv MobileNet (standard 3×3 convs)" if report["full_conv"] else "MobileNet V1"
    lines = [f"{title}  α={cfg['width_mult']!r}  ρ={cfg['resolution']}  "
             f"input {cfg['resolution']}×{cfg['resolution']}×{cfg['in_channels']}  "
             f"{cfg['num_classes']} classes", ""]
    head = f"{'#':>3}  {'layer':<11} {'type / stride':<14} {'filter shape':<16} {'input size':<13} " \
           f"{'output size':<13} {'params':>11} {'mult-adds':>14}"
    lines += [head, "-" * len(head)]
    n = 0
    for r in report["layers"]:
        n += r["type"] != "pool"
        num = "" if r["type"] == "pool" else str(n)
        lines.append(f"{num:>3}  {r['name']:<11} {_KIND_LABEL[r['type']] + ' / s' + str(r['stride']):<14} "
                     f"{_filter(r):<16} {_x(r['input_shape']):<13} {_x(r['output_shape']):<13} "
                     f"{r['params']:>11,} {r['mult_adds']:>14,}")
    lines.append(f"{'':>3}  {'softmax':<11} {'Softmax / s1':<14} {'Classifier':<16} "
                 f"{_x(report['layers'][-1]['output_shape']):<13}")
    lines += ["-" * len(head),
              f"{'':>3}  {'total':<72} {report['params']:>11,} {report['mult_adds']:>14,}",
              f"     = {_m(report['mult_adds'])} mult-adds, {_m(report['params'])} parameters, "
              f"{report['peak_activation_bytes'] / 2**20:,.2f} MiB peak activations (batch 1, float32)", "",
              "Table 2: resources per layer type (conv and FC weights, as the paper counts)",
              f"  {'type':<16} {'mult-adds':>10} {'parameters':>11}"]
    for t in ("pointwise", "depthwise", "conv", "fc"):
        s = report["by_type"][t]
        if s["mult_adds"] or s["params"]:
            lines.append(f"  {_TYPE_LABEL[t]:<16} {s['mult_adds_pct']:>9.2f}% {s['params_pct']:>10.2f}%")
    one, net = report["layer"], report["network"]
    h, w, c = one["input_shape"]
    lines += ["", "Standard vs depthwise separable convolution",
              f"  Table 3: one {h}×{w}×{c} layer, 3×3, {c}→{one['out_channels']}",
              f"    standard   {_m(one['standard']['mult_adds']):>9} mult-adds  "
              f"{_m(one['standard']['params'], 2):>7} params",
              f"    separable  {_m(one['separable']['mult_adds']):>9} mult-adds  "
              f"{_m(one['separable']['params'], 2):>7} params  "
              f"({one['reduction']:.1f}× fewer mult-adds; 1/N + 1/D_K² = {one['ratio']:.3f})",
              "  Table 4: the whole network",
              f"    Conv MobileNet {_m(net['standard']['mult_adds']):>9} mult-adds  "
              f"{_m(net['standard']['params']):>7} params",
              f"    MobileNet      {_m(net['separable']['mult_adds']):>9} mult-adds  "
              f"{_m(net['separable']['params']):>7} params  ({net['reduction']:.1f}× fewer mult-adds)"]
    return "\n".join(lines)


def models() -> list[dict]:
    """Tables 6 and 7 as data: the paper's 16 variants with their mult-adds and parameters."""
    rows = []
    for name in list_models():
        cfg, r = get_config(name), cost_report(get_config(name))
        rows.append({"name": name, "width_mult": cfg.width_mult, "resolution": cfg.resolution,
                     "mult_adds": r["mult_adds"], "params": r["params"]})
    return rows


def models_table() -> str:
    """Tables 6 and 7 as text, one variant a line."""
    lines = [f"{'name':<24} {'α':>5} {'ρ':>4} {'mult-adds':>10} {'params':>7}"]
    for r in models():
        lines.append(f"{r['name']:<24} {r['width_mult']:>5g} {r['resolution']:>4} {_m(r['mult_adds']):>10} "
                     f"{_m(r['params']):>7}")
    return "\n".join(lines)
