import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet.data.augment import flip_and_shift, random_erasing
from mobilenet.data.fashion import TensorSource, load_fashion_mnist
from mobilenet.data.folder import FolderSource
from mobilenet.data.images import DEBIAN_DIR, FASHION_CLASSES, fashion_files, load_image
from mobilenet.errors import MobileNetError


@pytest.mark.skipif(not fashion_files(DEBIAN_DIR, "train"), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_counts_shapes_and_labels():
    x, y = load_fashion_mnist("train", DEBIAN_DIR)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    x, y = load_fashion_mnist("test", DEBIAN_DIR)
    assert x.shape == (10000, 1, 28, 28) and torch.equal(torch.bincount(y), torch.full((10,), 1000))
    assert y[:3].tolist() == [9, 2, 1]  # the first test images: ankle boot, pullover, trouser
    assert len(FASHION_CLASSES) == 10


def test_fake_fashion_reader(fake_fashion):
    x, y = load_fashion_mnist("test")
    assert x.shape == (200, 1, 28, 28) and y.max() == 9


@pytest.mark.fault
@pytest.mark.parametrize("name, data", [("train-images-idx3-ubyte", b"garbage!"), ("train-images-idx3-ubyte", b""),
                                        ("train-images-idx3-ubyte.gz", b"\x1f\x8b\x08\x00 corrupt gzip")])
def test_idx_reader_rejects_garbage(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    (tmp_path / name.replace("images-idx3", "labels-idx1")).write_bytes(data)
    with pytest.raises(MobileNetError, match="not a readable IDX"):
        load_fashion_mnist("train", tmp_path)


def test_flip_and_shift_keeps_shape_and_content():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    y = flip_and_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    flipped = flip_and_shift(x, 0, torch.Generator().manual_seed(1))  # no shift: each image kept or mirrored
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))
    assert any(torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))  # seed 1 mirrors at least one
    assert torch.equal(flip_and_shift(x, 2, torch.Generator().manual_seed(0)), y)  # seeded


@pytest.mark.fault
def test_every_format_and_mode_loads(image_folder):
    files = [p for p in sorted(image_folder.rglob("*")) if p.is_file() and p.name != "broken.jpg"]
    assert len({p.suffix for p in files}) >= 6
    for p in files:
        assert load_image(p, 3).mode == "RGB" and load_image(p, 1).mode == "L"
    with pytest.raises(MobileNetError, match="broken.jpg"):
        load_image(image_folder / "dog" / "broken.jpg")


@pytest.mark.fault
def test_exif_rotation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (10, 20)


def test_folder_split_is_stratified_and_seeded(image_folder):
    a = FolderSource(image_folder, 32, seed=0, test_split=0.34, workers=0)
    b = FolderSource(image_folder, 32, seed=0, test_split=0.34, workers=0)
    assert a.classes == ["cat", "dog", "fox"]
    assert a.test_set.samples == b.test_set.samples
    labels = sorted(label for _, label in a.test_set.samples)
    assert labels == [0, 0, 1, 1, 2, 2]  # round(n × 0.34) of each class (dog has 7 files)
    assert not set(a.test_set.samples) & set(a.train_set.samples)


def test_folder_with_train_and_val(tmp_path):
    from conftest import make_image_folder
    make_image_folder(tmp_path / "d" / "train", corrupt=False)
    make_image_folder(tmp_path / "d" / "val", per_class=2, corrupt=False)
    source = FolderSource(tmp_path / "d", 32, seed=0, workers=0)
    assert (source.num_train, source.num_test) == (18, 6)


@pytest.mark.fault
def test_folder_errors(tmp_path):
    with pytest.raises(MobileNetError, match="no such folder"):
        FolderSource(tmp_path / "missing", 32, 0)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(MobileNetError, match="no images"):
        FolderSource(tmp_path / "empty", 32, 0)
    (tmp_path / "one" / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "one" / "a" / f"{i}.png")
    with pytest.raises(MobileNetError, match="at least two"):
        FolderSource(tmp_path / "one", 32, 0)


def test_numpy_preparation_matches_the_torch_test_pipeline(image_folder, tmp_path):
    """predict (and the torch-free runtime) must see what evaluation sees."""
    from mobilenet.data.augment import folder_transforms
    from mobilenet.data.batches import normalize_resize
    from mobilenet.data.fashion import FASHION_MEAN, FASHION_STD
    from mobilenet.data.images import bilinear_resize, prepare

    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    for size in (32, 64, 20):
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                                                   align_corners=False)
        np.testing.assert_allclose(bilinear_resize(x, size), expected.numpy(), atol=1e-6)
    pixels = (np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)
    spec = {"channels": 1, "image_size": 28, "resolution": 32, "mean": FASHION_MEAN, "std": FASHION_STD}
    ours = prepare(Image.fromarray(pixels, "L"), spec)
    theirs = normalize_resize(torch.from_numpy(pixels)[None, None], FASHION_MEAN, FASHION_STD, 32)[0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
    spec = {"channels": 3, "resolution": 64, "resize": 73, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    transform = folder_transforms(64, spec["mean"], spec["std"])  # the test split's: no augmentation
    for path in sorted(image_folder.rglob("*.png"))[:3]:
        image = load_image(path, 3)
        np.testing.assert_allclose(prepare(image, spec), transform(image).numpy(), atol=1e-5)


def test_random_erasing_is_seeded_and_erases_what_it_says():
    x = torch.zeros(2000, 1, 40, 40)
    erased = random_erasing(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(erased, random_erasing(x, 0.5, torch.Generator().manual_seed(3)))
    assert not torch.equal(erased, random_erasing(x, 0.5, torch.Generator().manual_seed(4)))
    share = (erased != 0).flatten(1).float().mean(1)
    hit = share > 0
    assert 0.45 < hit.float().mean() < 0.55  # p = 0.5
    assert share[hit].min() >= 0.015 and share[hit].max() <= 0.36  # 2-33% of the area, in whole pixels
    assert torch.equal(random_erasing(x, 0.0, torch.Generator().manual_seed(3)), x)


def test_validation_split_is_seeded_stratified_and_apart_from_training(fake_fashion, image_folder):
    from mobilenet.data.fashion import fashion_mnist

    a, b = fashion_mnist(32, seed=0, val_split=0.2), fashion_mnist(32, seed=0, val_split=0.2)
    assert a.num_val == 80 and a.num_train == 320 and torch.equal(a.val_x, b.val_x)
    assert torch.bincount(a.val_y, minlength=10).tolist() == [8] * 10  # stratified: 20% of each class
    train_images = {bytes(x.numpy()) for x in a.train_x}
    assert not any(bytes(x.numpy()) in train_images for x in a.val_x)  # held out, not shared
    assert fashion_mnist(32, seed=0).num_val == 0
    folder = FolderSource(image_folder, 32, seed=0, test_split=0.34, workers=0, val_split=0.25)
    val = {p for p, _ in folder.val_set.samples}
    assert val and not val & {p for p, _ in folder.train_set.samples}
    assert sum(len(b.labels) + len(b.bad_files) for b in folder.val_batches(4)) == folder.num_val


def test_the_salts_mix_and_the_splits_never_change():
    """A model folder's test split is found again from the seed it records, and a seed
    repeats a past run: the salts, mix and each split's choice are pinned to the values
    earlier runs were made with."""
    from mobilenet import seeds

    assert [seeds.DROPOUT, seeds.ERASING, seeds.LIMIT, seeds.VAL_SPLIT, seeds.TRIAL_MODEL, seeds.TRIAL_SPLIT,
            seeds.TRIAL_ORDER, seeds.TRIAL_SUBSET] == [1, 2, 7, 11, 13, 17, 19, 23]
    assert seeds.mix(0, 11) == 1903065514990152982 and seeds.mix(5, 1, 2, 1) == 1870278871894534704
    samples = [(i, i % 3) for i in range(30)]
    held = {part: [i for i, _ in seeds.stratified_split(samples, 0.2, 5, part)[1]] for part in seeds.SPLITS}
    assert held == {"test": [21, 18, 19, 22, 8, 14], "val": [9, 0, 7, 19, 20, 14], "trial": [3, 6, 28, 10, 26, 23],
                    "trial subset": [3, 18, 25, 16, 26, 5]}
    with pytest.raises(MobileNetError, match="--val-split must be between 0 and 1"):
        seeds.stratified_split(samples, 1.0, 5, "val")


def test_both_sources_implement_the_source_protocol_themselves():
    """The loop, evaluate and the report read a data set through batches.Source; each source
    gives every part of it itself, except the steps per epoch and the move to a device (the
    protocol's: files stay on the host)."""
    from mobilenet.data.batches import Source

    parts = [m for m in vars(Source) if not m.startswith("_") and m not in ("steps_per_epoch", "to")]
    for cls in (TensorSource, FolderSource):
        assert Source in cls.__mro__
        inherited = [m for m in parts if next(k for k in cls.__mro__ if m in vars(k)) is Source]
        assert not inherited, f"{cls.__name__} leaves {inherited} to the protocol's empty stubs"
