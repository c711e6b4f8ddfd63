"""Starting from weights trained elsewhere: timm's ImageNet MobileNet V1, a local timm
checkpoint, or one of our own model.safetensors files (`--init`), and `mobilenet convert`.

Files are read with safetensors or torch.load(weights_only=True): never unpickled.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..data.images import IMAGENET_MEAN, IMAGENET_STD, crop_input_spec
from ..errors import BadArgument, MobileNetError, first_line, install_hint, printable
from ..files import check_readable, read_regular
from ..net.model import MobileNetV1, config_from_timm_state_dict, timm_to_mobilenet_state_dict
from ..run.folder import CHECKPOINT_LIMIT, check_archive, read_config, save_model
from ..run.info import ModelInfo
from ..run.names import CHECKPOINT, CONFIG, WEIGHTS
from ..run.ownership import refuse_foreign

TIMM_PREFIX = "timm:"


def read_weight_file(path, what: str = "--init") -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch checkpoint (weights only); a
    checkpoint's own wrapping ("state_dict", "model", "state_dict_ema") is unwrapped."""
    path = Path(path)
    try:
        data = read_regular(path, CHECKPOINT_LIMIT, what)
    except FileNotFoundError:
        raise _no_such(path, what) from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load
            return load(data)
        check_archive(data, path, what)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except MobileNetError:
        raise
    except Exception as e:  # safetensors, pickle and zip errors all mean the same to the user
        raise MobileNetError(f"{path} is not a readable weights file ({type(e).__name__}); "
                             "give a .safetensors file or a torch checkpoint of tensors") from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MobileNetError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_init(source: str | None) -> None:
    """One line, before a run makes its folder, if --init names a file that cannot be read."""
    if source and not source.startswith(TIMM_PREFIX):
        try:
            check_readable(source, "--init")
        except FileNotFoundError:
            raise _no_such(source, "--init") from None


def _no_such(path, what: str) -> MobileNetError:
    return MobileNetError(f"{what} {path}: no such file; give a .safetensors or .pth file, or timm:NAME")


def is_timm(state: dict) -> bool:
    return "conv_stem.weight" in state


def load_init(source: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict named by --init, and the activation it was trained with, if known:
    ReLU6 for timm's weights; for our own model.safetensors, that of the config.json beside it."""
    if source.startswith(TIMM_PREFIX):
        name = source[len(TIMM_PREFIX):]
        try:
            import timm
            state = timm.create_model(name, pretrained=True).state_dict()
        except ImportError:
            raise MobileNetError("--init timm:…: timm is not installed; " + install_hint("timm", "timm")) from None
        except Exception as e:  # no internet, unknown name, hub errors
            raise MobileNetError(f"--init {source}: could not get timm's weights ({first_line(e)}); "
                                 "this needs internet access, or download them once and give the file") from None
        return state, "relu6"
    state = read_weight_file(source)
    if is_timm(state):
        return state, "relu6"
    try:  # our own weights: their folder's config.json says the activation
        return state, read_config(Path(source).parent).model.activation
    except MobileNetError:
        return state, None


def fit_state_dict(state: dict, model: MobileNetV1) -> dict:
    """Weights of another MobileNet V1 (ours or timm's) made to fit `model`:
    - timm's names are mapped onto ours;
    - a 3-channel first conv meets a 1-channel model by summing over its input channels
      (a grey image is R = G = B, so the sum gives the response to the grey image);
    - a classifier of another size is left out: `model` keeps its fresh one.
    Raises MobileNetError on any other mismatch (another width, another network)."""
    try:
        if is_timm(state):
            state = timm_to_mobilenet_state_dict(state)
    except ValueError as e:
        raise MobileNetError(f"--init: {e}") from None
    target = model.state_dict()
    state = dict(state)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MobileNetError("--init: the file holds more than tensors; give a state dict of MobileNet V1 weights")
    first = "features.conv1.0.weight"
    if first in state and state[first].ndim == 4 and state[first].shape[1] != target[first].shape[1]:
        if target[first].shape[1] != 1:
            raise MobileNetError(f"--init: the weights take {state[first].shape[1]} input channels, the model "
                                 f"{target[first].shape[1]}; only 3 -> 1 (grey) is adapted")
        state[first] = state[first].sum(1, keepdim=True)
    if state.get("classifier.weight") is not None and state["classifier.weight"].shape != target["classifier.weight"].shape:
        state.pop("classifier.weight")
        state.pop("classifier.bias", None)
    missing = set(target) - set(state) - {"classifier.weight", "classifier.bias"}
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    if missing or wrong:
        example = sorted(missing or wrong)[0]
        raise MobileNetError(f"--init: the weights do not fit this model (e.g. {example}); check --width "
                             "(timm's mobilenetv1_100 is --width 1.0)")
    return {k: v for k, v in state.items() if k in target}


def convert_timm(file, output, resolution: int = 224, force: bool = False) -> Path:
    """`mobilenet convert --from-timm FILE --output DIR`: a model folder (model.safetensors
    + config.json) from a timm mobilenetv1 state dict, ready for predict and export. Files
    there that this toolkit did not write, or a trained run's, are replaced only with `force`."""
    from ..files import make_dir

    output = Path(output)
    if not force and (output / CHECKPOINT).exists():
        raise BadArgument(f"--output {printable(output)} holds a trained run (checkpoint.pt), whose model this would "
                          "replace; choose another --output, or add --force")
    refuse_foreign([output / WEIGHTS, output / CONFIG], "--output", force)
    state = read_weight_file(file, "--from-timm")
    if not is_timm(state):
        raise MobileNetError(f"{file} is not a timm mobilenetv1 state dict (no conv_stem.weight)")
    try:
        config = config_from_timm_state_dict(state, resolution)
        model = MobileNetV1.from_config(config)
        model.load_state_dict(timm_to_mobilenet_state_dict(state), strict=True)
    except (ValueError, RuntimeError) as e:
        raise MobileNetError(f"{file}: cannot convert ({first_line(e)})") from None
    classes = [f"class_{i}" for i in range(config.num_classes)]
    if config.num_classes == 1000:
        try:
            from timm.data import ImageNetInfo  # ships the ImageNet class names, offline
            classes = [str(c) for c in ImageNetInfo().label_descriptions()]
        except Exception:  # noqa: BLE001 - names are a nicety; numbered classes still work
            pass
    output = make_dir(output, "--output")
    spec = crop_input_spec(config.in_channels, resolution, IMAGENET_MEAN, IMAGENET_STD)
    save_model(model, output, ModelInfo(classes, spec, config, {"name": "imagenet", "source": str(file)}))
    return output
