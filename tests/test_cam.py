"""Class activation maps against a hand computation from the last feature map and the FC."""

import pytest
import torch
import torch.nn.functional as F

import mobilenet
from mobilenet.errors import MobileNetError


@pytest.fixture(scope="module")
def model(small_run):
    """A trained model (an untrained one's last feature map is all but zero)."""
    return mobilenet.load_model(small_run[0])[0]


def _by_hand(model, x, classes):
    """Σ_k w[c, k] · f_k(x, y) for each image, written out over the channels k."""
    with torch.no_grad():
        features = model.features(x)
        weights = model.classifier.weight
        return torch.stack([sum(weights[c, k] * features[n, k] for k in range(features.shape[1]))
                            for n, c in enumerate(classes)])


def test_cam_is_the_fc_row_weighted_feature_map(model):
    x = torch.randn(3, 1, 96, 96)  # a 3×3 last feature map
    assert _by_hand(model, x, [0, 0, 0]).abs().mean() > 0.01  # maps the checks below can tell apart
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(1).tolist()
    low = _by_hand(model, x, predicted)
    # the definition: averaged over positions, plus the bias, a map is its class's logit
    torch.testing.assert_close(low.mean((1, 2)) + model.classifier.bias[predicted], logits[range(3), predicted])
    expected = F.interpolate(low[:, None], size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
    maps = mobilenet.cam(model, x)
    assert maps.shape == (3, 96, 96)
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(mobilenet.cam(model, x, class_index=2)[1],
                               F.interpolate(_by_hand(model, x, [2, 2, 2])[:, None], size=(96, 96),
                                             mode="bilinear", align_corners=False)[1, 0])
    torch.testing.assert_close(mobilenet.cam(model, x, class_index=[0, 1, 9]),
                               F.interpolate(_by_hand(model, x, [0, 1, 9])[:, None], size=(96, 96),
                                             mode="bilinear", align_corners=False)[:, 0])


@pytest.mark.parametrize("class_index", [10, -1, 1.5, [0, 1], "a"])
def test_a_class_index_that_names_no_class_is_one_line(model, class_index):
    with pytest.raises(MobileNetError, match="class_index must be one class or one per image"):
        mobilenet.cam(model, torch.randn(3, 1, 64, 64), class_index=class_index)


def test_a_model_in_training_mode_is_refused(model):
    with pytest.raises(MobileNetError, match="training mode"):
        mobilenet.cam(model.train(), torch.randn(1, 1, 64, 64))
    model.eval()
