import json
import os

import pytest
import torch
from safetensors.torch import load_file

from mobilenet.errors import MobileNetError
from mobilenet.net.model import MobileNetV1
from mobilenet.run.folder import load_model
from mobilenet.training.weights import fit_state_dict, read_weight_file

from conftest import cli

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    for m in model.modules():  # random BN statistics, so the check covers them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_convert_gives_equal_logits(timm_model, tmp_path, suffix):
    path = tmp_path / f"timm{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": timm_model.state_dict()}, path)
    r = cli("convert", "--from-timm", str(path), "--output", str(tmp_path / "converted"))
    assert r.returncode == 0, r.stderr
    model, info = load_model(tmp_path / "converted")
    assert info.model.activation == "relu6" and len(info.classes) == 1000
    assert info.classes[0].startswith("tench")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), timm_model(x), atol=1e-5, rtol=0)
    if suffix == ".safetensors":  # a converted model exports too (ImageNet is not here: random inputs only)
        from mobilenet.deploy.exporter import export
        notes = []
        report = export(tmp_path / "converted", "onnx", output=tmp_path / "m.onnx", log=notes.append)
        assert report["random"]["max_abs_diff"] <= 1e-4 and "random inputs only" in notes[0]


def test_grey_data_with_3_channel_weights(timm_model):
    """A 1-channel model starts from the summed first-layer filters: on a grey image it
    sees exactly what timm's model sees on the same image in RGB (R = G = B)."""
    ours = MobileNetV1(num_classes=10, in_channels=1, activation="relu6").eval()
    ours.load_state_dict(fit_state_dict(timm_model.state_dict(), ours), strict=False)
    grey = torch.rand(2, 1, 96, 96)
    with torch.inference_mode():
        reference = timm_model.forward_head(timm_model.forward_features(grey.expand(-1, 3, -1, -1)), pre_logits=True)
        torch.testing.assert_close(ours.forward_features(grey), reference, atol=1e-5, rtol=1e-4)
    assert ours.classifier.out_features == 10


def test_train_with_init_from_a_timm_checkpoint(timm_model, fake_fashion, tmp_path):
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    out = tmp_path / "run"
    r = cli("train", "--init", str(tmp_path / "timm.pth"), "--epochs", "1", "--resolution", "32",
            "--batch-size", "32", "--limit", "64", "--out", str(out), env={"MOBILENET_FASHION_MNIST": str(fake_fashion)})
    assert r.returncode == 0, r.stderr
    assert "initialised from" in r.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["activation"] == "relu6" and config["model"]["in_channels"] == 1
    model, _ = load_model(out)
    assert_started_from(out, fit_state_dict(timm_model.state_dict(), model))
    # and from one of our own model.safetensors files
    r = cli("train", "--init", str(out / "model.safetensors"), "--epochs", "1", "--resolution", "32",
            "--batch-size", "32", "--limit", "64", "--out", str(tmp_path / "again"),
            env={"MOBILENET_FASHION_MNIST": str(fake_fashion)})
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model"]["activation"] == "relu6"
    assert_started_from(tmp_path / "again", load_file(out / "model.safetensors"))


def assert_started_from(run, init: dict) -> None:
    """The run's weights after its two steps are still those it was given, nearly: every
    conv's filters point the same way (cosine > 0.8; 0.88 for the first conv's 288 weights,
    above 0.99 for the rest), where an independent random start gives about 0 (± 0.06)."""
    trained = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    convs = [k for k, v in init.items() if v.ndim == 4]
    assert len(convs) == 27  # Table 1's convs
    for key in convs:
        cosine = torch.nn.functional.cosine_similarity(trained[key].flatten(), init[key].flatten(), dim=0)
        assert cosine > 0.8, (key, cosine.item())


@pytest.mark.fault
def test_init_errors(tmp_path, fake_fashion):
    env = {"MOBILENET_FASHION_MNIST": str(fake_fashion)}
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    for source, words in ((str(tmp_path / "missing.pth"), "no such file"),
                          (str(tmp_path / "evil.pth"), "not a readable weights file")):
        r = cli("train", "--init", source, "--epochs", "1", "--resolution", "32", "--limit", "64",
                "--out", str(tmp_path / "run"), env=env)
        assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()  # nothing from the file ran
    with pytest.raises(MobileNetError, match="does not hold"):
        torch.save({"a": 1}, tmp_path / "notensors.pth")
        read_weight_file(tmp_path / "notensors.pth")
    wide = MobileNetV1(width_mult=0.5)
    with pytest.raises(MobileNetError, match="--width"):
        fit_state_dict(MobileNetV1().state_dict(), wide)


@pytest.mark.fault
def test_init_weights_of_odd_shapes_are_one_error():
    model = MobileNetV1(num_classes=10, in_channels=1)
    state = MobileNetV1().state_dict()
    state["features.conv1.0.weight"] = torch.zeros(32)  # 1-D where a 4-D filter bank belongs
    with pytest.raises(MobileNetError, match="do not fit"):
        fit_state_dict(state, model)
