"""The imagefolder loader: image size (own, given, mixed), split folders (test/ and val/), unreadable files;
streamed decoding (batch by batch) evaluates exactly as the same images held in memory."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from classwise.data import load_dataset
from classwise.data.folder import FitSquare, check_image_size_option, image_sizes
from classwise.errors import ClasswiseError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSWISE_DATA", str(tmp_path / "default-root"))


def write_jpeg_folder(root: Path, split: str = "test", per_class: int = 3, size: tuple[int, int] = (32, 32),
                      classes: list[str] = CLASSES, seed: int = 0, suffix: str = ".jpg") -> dict[Path, np.ndarray]:
    """A CIFAR-10-like folder: random-noise JPEGs (or PNGs, ``suffix=".png"``) of ``size`` (width, height);
    returns each file's pixels as PIL decodes them (HWC uint8), the independent reference."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    for cls in classes:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = root / split / cls / f"{i:04d}{suffix}"
            img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            img.save(p, **({"quality": 90} if suffix == ".jpg" else {}))
            with Image.open(p) as im:
                out[p] = np.array(im.convert("RGB"))
    return out


def test_own_size_is_the_default_and_pixels_are_untouched(tmp_path):
    truth = write_jpeg_folder(tmp_path)
    for image_size in (None, 32):  # the images' own size, given or found: no resize, no crop
        data = load_dataset("imagefolder", "test", root=tmp_path, image_size=image_size)
        assert data.image_shape == (3, 32, 32) and data.class_names == CLASSES
        assert data.meta["image_size"] == 32
        assert data.meta["image_size_source"] == ("the images" if image_size is None else "given")
        x, y = data.tensors()
        assert y.tolist() == [c for c in range(10) for _ in range(3)]
        want = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for _, a in sorted(truth.items())])
        assert torch.equal(x, want)


def test_a_given_size_resizes_and_centre_crops_like_torchvision(tmp_path):
    from PIL import Image
    from torchvision import transforms as T

    truth = write_jpeg_folder(tmp_path, per_class=1, size=(40, 30))
    data = load_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    x, _ = data.tensors()
    assert x.shape == (10, 3, 16, 16)
    ref = T.Compose([T.Resize(int(16 * 256 / 224)), T.CenterCrop(16), T.ToTensor()])  # the ImageNet protocol
    for j, (_, a) in enumerate(sorted(truth.items())):
        assert torch.equal(x[j], ref(Image.fromarray(a)))


def test_fit_square_passes_an_image_of_the_size_through_and_pickles():
    from PIL import Image

    a = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    out = pickle.loads(pickle.dumps(FitSquare(24)))(Image.fromarray(a))  # DataLoader workers pickle it
    assert torch.equal(out, torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    assert FitSquare(12)(Image.fromarray(a)).shape == (3, 12, 12)


def test_mixed_sizes_need_image_size(tmp_path):
    write_jpeg_folder(tmp_path, classes=["a"], per_class=2, size=(32, 32))
    write_jpeg_folder(tmp_path, classes=["b"], per_class=1, size=(28, 32))
    with pytest.raises(ClasswiseError) as e:
        load_dataset("imagefolder", "test", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "differ in size" in msg and "--image-size N" in msg
    assert "32x32 (a/0000.jpg), 28x32 (b/0000.jpg);" in msg and "and more" not in msg
    assert load_dataset("imagefolder", "test", root=tmp_path, image_size=32).image_shape == (3, 32, 32)


def test_the_scan_stops_after_four_sizes_and_says_there_are_more(tmp_path):
    for k, w in enumerate((8, 9, 10, 11, 12)):
        write_jpeg_folder(tmp_path, classes=[f"c{k}"], per_class=1, size=(w, w))
    paths = sorted(str(p) for p in (tmp_path / "test").rglob("*.jpg"))
    assert list(image_sizes(paths)) == [(8, 8), (9, 9), (10, 10), (11, 11)]
    with pytest.raises(ClasswiseError, match=r"11x11 \(c3/0000.jpg\) and more; pass --image-size"):
        load_dataset("imagefolder", "test", root=tmp_path)


def test_non_square_images_of_one_size_need_image_size(tmp_path):
    write_jpeg_folder(tmp_path, classes=["a", "b"], per_class=1, size=(30, 20))
    with pytest.raises(ClasswiseError, match=r"all 30x20 \(width x height\), not square; pass --image-size N"):
        load_dataset("imagefolder", "test", root=tmp_path)


def test_an_unreadable_image_is_a_one_line_error(tmp_path):
    write_jpeg_folder(tmp_path, classes=["a", "b"], per_class=1)
    bad = tmp_path / "test" / "b" / "0001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ClasswiseError, match="cannot read image .*0001.jpg") as e:
        load_dataset("imagefolder", "test", root=tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("folders,read", [(("val",), "val"), (("test",), "test"), (("val", "test"), "test")])
def test_split_folders_test_then_val(tmp_path, caplog, folders, read):
    for i, f in enumerate(folders):
        write_jpeg_folder(tmp_path, split=f, classes=["a", "b"], per_class=1 + i)
    write_jpeg_folder(tmp_path, split="train", classes=["a", "b"], per_class=1)
    with caplog.at_level(logging.WARNING, logger="classwise.data.folder"):
        data = load_dataset("imagefolder", "test", root=tmp_path)
    assert data.meta["root"] == str(tmp_path / read) and len(data) == 2 * (1 + folders.index(read))
    warned = [r.getMessage() for r in caplog.records if "both" in r.getMessage()]
    if len(folders) == 2:
        assert warned == [f"imagefolder: both test/ and val/ exist in {tmp_path}; the test split reads test/ "
                          "(not val/)"]
    else:
        assert warned == []
    assert load_dataset("imagefolder", "train", root=tmp_path).meta["root"] == str(tmp_path / "train")


def test_classes_must_match_between_train_and_the_test_folder_read(tmp_path):
    write_jpeg_folder(tmp_path, split="train", classes=["a", "b"], per_class=1)
    write_jpeg_folder(tmp_path, split="test", classes=["a", "c"], per_class=1)
    with pytest.raises(ClasswiseError, match="only in test: c; only in train: b"):
        load_dataset("imagefolder", "test", root=tmp_path)


def test_image_size_option_applies_to_imagefolder_only():
    check_image_size_option("imagefolder", 32)
    check_image_size_option("cifar10", None)
    with pytest.raises(ClasswiseError, match="--image-size applies only to --dataset imagefolder; cifar10"):
        check_image_size_option("cifar10", 32)


# --- streaming: images decoded batch by batch, never the whole split at once ------------------------


def _counting_decodes(data, monkeypatch) -> list[int]:
    """A one-element list counting the images ``data``'s folder decodes from now on."""
    calls = [0]
    real = FitSquare.__call__

    def counted(self, img):
        calls[0] += 1
        return real(self, img)

    monkeypatch.setattr(FitSquare, "__call__", counted)
    return calls


def test_a_folder_is_decoded_one_batch_at_a_time(tmp_path, monkeypatch):
    write_jpeg_folder(tmp_path, per_class=4, size=(8, 8), suffix=".png")
    data = load_dataset("imagefolder", "test", root=tmp_path).take(30, seed=0)
    assert data.streaming and data.images is None
    decoded = _counting_decodes(data, monkeypatch)
    batches = data.batches(8)
    sizes = [len(next(batches)[1])]
    assert decoded[0] == 8  # the first batch decodes its own 8 images, nothing ahead
    sizes += [len(y) for _, y in batches]
    assert sizes == [8, 8, 8, 6] and decoded[0] == 30  # each image once


def test_streamed_evaluation_equals_the_same_images_in_memory(tmp_path):
    from classwise.data.base import ImageData
    from classwise.data.selection import Selection
    from classwise.evaluation import evaluate
    from classwise.models import create_model

    truth = write_jpeg_folder(tmp_path, per_class=6, size=(12, 12), suffix=".png")  # PNG: lossless
    streamed = load_dataset("imagefolder", "test", root=tmp_path)
    x, y = streamed.tensors()
    want = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for _, a in sorted(truth.items())])
    assert torch.equal(x, want)
    in_memory = ImageData(streamed.name, streamed.split, streamed.class_names, y, images=x, meta=dict(streamed.meta))
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=3, input_size=12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):  # fitted to the noise: most images right when clean, some broken by the attacks
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    attacks = ["fgsm:eps=2/255", "pgd:eps=2/255,steps=3"]
    for sel in (Selection(limit=37, seed=3), Selection(limit=25, mode="first"), Selection(indices=(59, 0, 31, 7))):
        s, m = sel.apply(streamed), sel.apply(in_memory)
        assert s.streaming and not m.streaming and s.meta["index"] == m.meta["index"]
        for (xs, ys), (xm, ym) in zip(s.batches(16), m.batches(16), strict=True):
            assert torch.equal(xs, xm) and torch.equal(ys, ym)
        a, b = (evaluate(model, d, attacks, batch_size=16, device="cpu", seed=5) for d in (s, m))
        assert len(a) == len(sel.indices or ()) or len(a) == sel.limit
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.clean_pred, b.clean_pred)
        assert a.attacks == b.attacks
        for att in a.attacks:
            np.testing.assert_array_equal(a.adv_pred[att], b.adv_pred[att])
        if sel.indices is None:  # the attacks ran and broke some images, not all
            assert 0 < a.robust(a.attacks[-1]).sum() < (a.clean_pred == a.labels).sum()
    stratified = Selection(limit=30, seed=3).apply(streamed)
    assert np.bincount(stratified.labels.numpy(), minlength=10).tolist() == [3] * 10  # every class keeps its share
