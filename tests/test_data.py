"""Tests for minimuse.data: Shapes follows its spec pixel for pixel; the file datasets read their real formats
(written here in miniature) and fail with clear messages; nothing touches the network."""
import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minimuse.data import build_dataset, files
from minimuse.data.files import CIFAR10, MNIST, ImageFolder
from minimuse.data.shapes import COLOURS, SHAPES, SHAPES_CLASS_NAMES, ShapeAttributes, Shapes, render_shape


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every download fails, as on a machine without network."""
    def refuse(url, dest):
        raise OSError(f"network disabled in tests ({url})")
    monkeypatch.setattr(files, "download", refuse)


# ---------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------

def foreground(image: torch.Tensor, a) -> np.ndarray:
    """(R, R) bool: pixels drawn in the shape colour."""
    pixels = np.round((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(int)
    return (pixels == np.array(a.rgb)).all(axis=-1)


def test_shapes_items_and_constants():
    d = Shapes(32)
    assert len(d) == 50_000 and len(Shapes(32, "holdout")) == 1_000 and len(Shapes(32, size=7)) == 7
    assert d.class_names == SHAPES_CLASS_NAMES and len(SHAPES_CLASS_NAMES) == 12
    assert SHAPES_CLASS_NAMES[0] == "red circle" and SHAPES_CLASS_NAMES[11] == "yellow triangle"
    image, label = d[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and isinstance(label, int)
    labels = [d[i][1] for i in range(500)]
    assert set(labels) == set(range(12))
    assert np.array_equal(Shapes(32, size=500).labels, labels)
    with pytest.raises(IndexError):
        d[50_000]


def test_shapes_deterministic_per_seed_and_split():
    a, b, c = Shapes(32, seed=0), Shapes(32, seed=0), Shapes(32, seed=1)
    holdout = Shapes(32, "holdout", seed=0)
    for i in range(20):
        assert torch.equal(a[i][0], b[i][0])
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(20))
    assert not any(torch.equal(a[i][0], holdout[i][0]) for i in range(20))


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_pixels_follow_the_spec(resolution):
    d = Shapes(resolution, size=150)
    for i in range(len(d)):
        a = d.attributes(i)
        image, label = d[i]
        assert image.shape == (3, resolution, resolution) and label == a.label
        assert resolution / 4 <= a.side <= resolution / 2
        assert a.side / 2 <= a.cx <= resolution - a.side / 2 and a.side / 2 <= a.cy <= resolution - a.side / 2
        base = np.array(COLOURS[list(COLOURS)[a.colour]])
        assert np.abs(np.array(a.rgb) - base).max() <= 25
        fg = foreground(image, a)
        ys, xs = np.nonzero(fg)
        # Every shape pixel lies in the bounding box (so inside the image), every other pixel is background.
        assert len(ys) > 0
        assert xs.min() + 0.5 >= a.cx - a.side / 2 and xs.max() + 0.5 <= a.cx + a.side / 2
        assert ys.min() + 0.5 >= a.cy - a.side / 2 and ys.max() + 0.5 <= a.cy + a.side / 2
        pixels = np.round((image.permute(1, 2, 0).numpy() + 1) * 127.5).astype(int)
        assert (pixels[~fg] == np.array(a.background)).all() and 0 <= min(a.background) <= max(a.background) <= 60
        fill = fg.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
        if SHAPES[a.shape] == "square":
            assert fill == 1.0
        elif SHAPES[a.shape] == "circle":
            assert 0.6 < fill < 0.95
        else:  # upright triangle: the apex row is narrower than the base row
            rows = fg.sum(axis=1)
            assert rows[ys.min()] < rows[ys.max()] and 0.4 < fill < 0.8


def test_render_shape_exact_small_square():
    a = ShapeAttributes(8, SHAPES.index("square"), 0, side=2.0, cx=4.0, cy=4.0, rgb=(200, 30, 30),
                             background=(0, 0, 0))
    mask = (render_shape(a) == (200, 30, 30)).all(axis=-1)
    expected = np.zeros((8, 8), bool)
    expected[3:5, 3:5] = True  # pixel centres 3.5 and 4.5 lie within [3, 5]
    assert np.array_equal(mask, expected)


def test_shapes_captions_agree_with_attributes():
    d = Shapes(48, size=300)
    seen_center = False
    for i in range(len(d)):
        a = d.attributes(i)
        words = a.caption.split()
        assert words[:2] == ["a", "small" if a.side < 3 * 48 / 8 else "large"]
        assert " ".join(words[2:4]) == d.class_names[a.label]
        row, column = ("top", "middle", "bottom")[int(a.cy // 16)], ("left", "center", "right")[int(a.cx // 16)]
        where = "center" if (row, column) == ("middle", "center") else f"{row} {column}"
        assert a.caption.endswith(f" at the {where}") and d.caption(i) == a.caption
        seen_center |= where == "center"
    assert seen_center


def test_shapes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        Shapes(32, "test")
    with pytest.raises(ValueError, match="resolution"):
        Shapes(4)


# ---------------------------------------------------------------------------------------------------------
# Image folder
# ---------------------------------------------------------------------------------------------------------

def write_image(path: Path, size=(40, 24), colour=(200, 100, 50)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder_classes_resize_and_corrupt_file(tmp_path):
    write_image(tmp_path / "cats" / "a.png")
    write_image(tmp_path / "cats" / "nested" / "b.jpg", size=(20, 30))
    write_image(tmp_path / "dogs" / "c.png", colour=(0, 0, 255))
    write_image(tmp_path / "dogs" / "d.webp")
    (tmp_path / "dogs" / "broken.png").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*broken\.png"):
        train = ImageFolder(tmp_path, 16)
    holdout = ImageFolder(tmp_path, 16, "holdout")
    assert train.class_names == ["cats", "dogs"]
    assert len(train) + len(holdout) == 4 and len(holdout) == 1  # holdout: every 50th file, the first here
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(ImageFolder(tmp_path, 16, "all")) == 4
    for image, label in list(train) + list(holdout):
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label in (0, 1)
    blue = [image for image, label in train if label == 1 and image[2].mean() > 0.9]
    assert len(blue) == 1 and torch.allclose(blue[0][0], torch.tensor(-1.0))


def test_image_folder_unlabelled_and_built_from_a_path(tmp_path):
    for k in range(3):
        write_image(tmp_path / f"{k}.png")
    d = build_dataset(str(tmp_path), 8)
    assert isinstance(d, ImageFolder) and d.class_names == [] and [label for _, label in d] == [0, 0]
    assert len(build_dataset(str(tmp_path), 8, size=1)) == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path, 16)
    (tmp_path / "awful.png").write_bytes(b"\x89PNG broken")  # first in sorted order: the holdout file
    (tmp_path / "bad.jpg").write_bytes(b"definitely not a jpeg" * 10)
    (tmp_path / "worse.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(ValueError, match="could be read"):
        ImageFolder(tmp_path, 16)
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing", 16)


def test_a_small_folder_builds_with_every_split_it_has_and_says_so(tmp_path, capsys):
    for i in range(12):
        Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(tmp_path / f"img{i:02d}.png")
    holdout = build_dataset(str(tmp_path), 16, "holdout", size=1000)         # the default holdout_size
    assert len(holdout) == 1 and "fewer than data.holdout_size=1000" in capsys.readouterr().out
    assert len(build_dataset(str(tmp_path), 16, "train", size=5)) == 5        # an even subset when it holds more
    with pytest.raises(ValueError, match="--set data.holdout_size="):
        build_dataset(str(tmp_path), 16, "holdout", size=0)


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# ---------------------------------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, compress: bool = True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_mnist(folder: Path, n=6, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        gz = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels, compress)
        arrays[prefix] = images, labels
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    d = MNIST(32, root=tmp_path)
    assert len(d) == 6 and d.class_names == [str(k) for k in range(10)]
    image, label = d[3]
    assert image.shape == (3, 32, 32) and label == 3
    assert torch.equal(image[0], image[2])  # gray copied to all channels
    assert (image[:, :2] == -1).all() and (image[:, :, -2:] == -1).all()  # 2-pixel black padding
    expected = torch.from_numpy(arrays["train"][0][3]).float() / 127.5 - 1
    assert torch.allclose(image[0, 2:30, 2:30], expected)
    holdout = MNIST(32, "holdout", root=tmp_path)
    assert torch.allclose(holdout[0][0][0, 2:30, 2:30], torch.from_numpy(arrays["t10k"][0][0]).float() / 127.5 - 1)
    assert MNIST(64, root=tmp_path)[0][0].shape == (3, 64, 64)


def test_mnist_from_a_path_and_bad_files(tmp_path):
    write_mnist(tmp_path / "my-fashion")
    d = build_dataset(str(tmp_path / "my-fashion"), 32, "holdout")
    assert isinstance(d, MNIST) and d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    write_idx(tmp_path / "my-fashion" / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(ValueError, match="do not match"):
        MNIST(32, root=tmp_path / "my-fashion")
    (tmp_path / "my-fashion" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03junk"))
    with pytest.raises(ValueError, match="not an IDX file"):
        MNIST(32, root=tmp_path / "my-fashion")


def test_mnist_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"(?s)t10k-images-idx3-ubyte\.gz.*{tmp_path}"):
        MNIST(32, "holdout", root=tmp_path)


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    d = build_dataset("fashion-mnist", 32, "holdout")
    assert len(d) == 10_000 and d.class_names[0] == "T-shirt/top"
    assert sorted(set(d.labels.tolist())) == list(range(10))
    image, _ = d[0]
    assert image.shape == (3, 32, 32) and image.min() == -1 and image.max() <= 1


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(folder: Path, n=4) -> dict:
    """A miniature cifar-10-batches-py/ (n images per batch) in the official pickled format, plus its archive."""
    batches_dir = folder / "cifar-10-batches-py"
    batches_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, size=n).tolist(), b"batch_label": name.encode()}
    batches["batches.meta"] = {b"label_names": [s.encode() for s in CIFAR_NAMES], b"num_vis": 3072}
    for name, content in batches.items():
        (batches_dir / name).write_bytes(pickle.dumps(content, protocol=2))
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(batches_dir, arcname="cifar-10-batches-py")
    return batches


def test_cifar_from_archive_and_folder(tmp_path):
    batches = write_cifar(tmp_path / "extracted")
    archive_only = tmp_path / "archive"
    archive_only.mkdir()
    (tmp_path / "extracted" / "cifar-10-python.tar.gz").rename(archive_only / "cifar-10-python.tar.gz")
    expected = torch.from_numpy(batches["data_batch_2"][b"data"][1].reshape(3, 32, 32)).float() / 127.5 - 1
    for root in (archive_only, tmp_path / "extracted", tmp_path / "extracted" / "cifar-10-batches-py"):
        d = CIFAR10(32, root=root)
        assert len(d) == 20 and d.class_names == CIFAR_NAMES
        image, label = d[5]
        assert torch.allclose(image, expected) and label == batches["data_batch_2"][b"labels"][1]
    holdout = build_dataset("cifar10", 64, "holdout", root=str(archive_only))
    assert len(holdout) == 4 and holdout[0][0].shape == (3, 64, 64)
    assert isinstance(build_dataset(str(archive_only), 32), CIFAR10)


def test_cifar_missing_archive_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"(?s)cifar-10-python\.tar\.gz.*{tmp_path}"):
        CIFAR10(32, root=tmp_path)


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)
    buffer = io.BytesIO()
    pickle.dump({b"label_names": __import__("os").getcwd}, buffer)  # names a function, as an attack would
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="refusing"):
        CIFAR10(32, root=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# build_dataset
# ---------------------------------------------------------------------------------------------------------

def test_build_dataset_names_and_errors(tmp_path):
    d = build_dataset("Shapes", 32, "holdout", seed=3, size=10)
    assert isinstance(d, Shapes) and len(d) == 10 and d.seed == 3
    with pytest.raises(ValueError, match="shapes, mnist, fashion-mnist, cifar10"):
        build_dataset("imagenet", 32)
    with pytest.raises(ValueError, match="split"):
        build_dataset("shapes", 32, "val")
    with pytest.raises(ValueError, match="root"):
        build_dataset("shapes", 32, root=str(tmp_path))
    write_mnist(tmp_path)
    assert len(build_dataset(str(tmp_path), 32, size=100)) == 6        # all of a split that holds fewer
