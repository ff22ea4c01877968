"""Crafted inputs through the command line: each is refused with exit status 2 and one line naming
the file or option, or handled safely, and nothing outside ``--out`` changes.

Covers: a pickle offered as the Inception weights (never unpickled), latents files whose image
names point outside ``--out`` or collide, 16-bit and other unusual image modes, bad numbers on
the command line and in configs, output paths that are files where folders are needed (and the
reverse), and ``compare`` inputs checked before any evaluation.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, tiny_config
from vaegan.cli import main
from vaegan.data.folder import ImageFolder
from vaegan.data.inputs import read_images
from vaegan.images import load_image, output_paths, save_image
from vaegan.metrics import features
from vaegan.tools.latents import save_latents

RESOLUTION = 32
# torch-fidelity's weights-inception-2015-12-05-6726825d.pth, written out here independently of the code.
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
LATENT_DIM = 32  # tiny_config's model.latent_dim


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers.


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny VAE-GAN trained for 2 steps: a run folder whose checkpoint the tools can load."""
    from vaegan.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    Trainer(tiny_config("model.kind=vaegan", "train.max_steps=2", "data.num_images=64", "train.batch_size=8"),
            run_dir).fit()
    return run_dir


@pytest.fixture
def faces(tmp_path) -> Path:
    """Three small images (40 px PNGs) in tmp_path/faces."""
    root = tmp_path / "faces"
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        save_image(torch.randint(0, 256, (3, 40, 40), generator=gen, dtype=torch.uint8), root / f"face{i}.png")
    return root


def snapshot(*roots: Path) -> dict:
    """Every entry under ``roots``: kind, size and modification time (symlinks not followed)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            state[str(path)] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns if kind == "file" else 0)
    return state


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_refused(rc: int, err: str, command: str, *named: str) -> None:
    """Exit 2 with exactly one line ``vaegan <command>: error: ...`` naming each of ``named``."""
    assert rc == 2, err
    assert err.startswith(f"vaegan {command}: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for name in named:
        assert str(name) in err, (name, err)


# ----------------------------------------------------------------------------------------------
# 1. A pickle given as the Inception weights is never unpickled.


class _Touch:
    """Unpickling this creates ``marker`` (a stand-in for any code a pickle can run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _evil_weights(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": _Touch(marker)}, path)
    return path


def test_the_crafted_pickle_runs_code_when_unpickled(tmp_path):
    """The payload is live (so the tests below that find no marker mean something)."""
    marker = tmp_path / "ran"
    evil = _evil_weights(tmp_path / "evil.pth", marker)
    torch.load(evil, weights_only=False)  # what torch-fidelity does with the weights file
    assert marker.exists()


def test_fid_refuses_a_pickle_given_as_inception_weights(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = _evil_weights(tmp_path / "evil.pth", marker)
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "fid", "--checkpoint", run, "--inception-weights", evil, "--num-samples", 4,
                     "--out", tmp_path / "m.json")
    assert not marker.exists()
    actual = hashlib.sha256(evil.read_bytes()).hexdigest()
    assert_refused(rc, err, "fid", evil, actual, INCEPTION_SHA256, features.INCEPTION_URL)
    assert snapshot(tmp_path, run) == before


def test_a_pickle_in_torch_hubs_cache_is_not_unpickled(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    marker = tmp_path / "ran"
    evil = _evil_weights(features.inception_cache_path(), marker)
    assert str(evil).startswith(str(tmp_path))
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "fid", "--checkpoint", run, "--num-samples", 4)
    assert not marker.exists()
    assert_refused(rc, err, "fid", evil, INCEPTION_SHA256)
    rc, _, err = cli(capsys, "compare", "--runs", run, "--num-samples", 4, "--out", tmp_path / "report")
    assert not marker.exists()
    assert_refused(rc, err, "compare", evil, INCEPTION_SHA256)
    assert snapshot(tmp_path, run) == before


def test_torch_fidelity_extractors_with_unverified_weights_are_refused(run, tmp_path, capsys):
    rc, _, err = cli(capsys, "fid", "--checkpoint", run, "--num-samples", 4, "--extractor", "vgg16")
    assert_refused(rc, err, "fid", "'vgg16'", "unverified")


# ----------------------------------------------------------------------------------------------
# 2. Names from a latents file or an input folder stay inside --out, one file each.


def test_decode_keeps_hostile_names_inside_out(run, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    (out / "link").symlink_to(outside, target_is_directory=True)
    names = [str(outside / "y.jpg"), "../../x.jpg", "a.jpg", "a.png", "sub/b.png", "link/z.jpg", "a.png", ".."]
    latents = save_latents(tmp_path / "z.safetensors", torch.randn(len(names), LATENT_DIM), names, RESOLUTION)
    before = snapshot(tmp_path, run)

    rc, stdout, err = cli(capsys, "decode", latents, "--checkpoint", run, "--out", out)
    assert rc == 0, err
    after = snapshot(tmp_path, run)
    new = sorted(os.path.relpath(p, out) for p in set(after) - set(before))
    assert new == ["a-1.png", "a.jpg.png", "a.png", "image-00007.png", "sub", "sub/b.png", "x.png", "y.png",
                   "z.png"]
    assert {p: v for p, v in after.items() if p in before} == before  # nothing else touched
    assert stdout.splitlines() == [f"wrote 8 images to {out}"]

    # Again: the same files, and it says that it replaced them.
    rc, stdout, _ = cli(capsys, "decode", latents, "--checkpoint", run, "--out", out)
    assert rc == 0 and set(snapshot(tmp_path, run)) == set(after)
    assert stdout.splitlines()[0] == f"wrote 8 images to {out}"
    assert stdout.splitlines()[1].startswith(f"replaced 8 existing file(s) in {out}: ")


def test_output_paths_stay_inside_and_apart(tmp_path):
    root = tmp_path / "out"
    names = ["C:/Windows/w.jpg", "..\\..\\v.jpg", "d\\e.png", "x\x00y.png", "é" * 300 + ".jpg", "/", "B.PNG",
             "b.png", "nested/../n.png"]
    paths = output_paths(names, root)
    assert [p.relative_to(root).as_posix() for p in paths[:4]] == ["w.png", "v.png", "d/e.png", "x_y.png"]
    assert len(paths[4].name.encode()) <= 200 and paths[4].suffix == ".png" and paths[4].parent == root
    assert paths[5] == root / "image-00005.png"
    assert [p.name for p in paths[6:]] == ["B.png", "b-1.png", "n.png"]  # alike when case is ignored
    assert len({p.as_posix().lower() for p in paths}) == len(names)


def test_sample_individual_says_what_it_replaced(run, tmp_path, capsys):
    out = tmp_path / "samples"
    rc, stdout, _ = cli(capsys, "sample", "--checkpoint", run, "--n", 2, "--individual", "--out", out,
                        "--prior", "normal")
    assert rc == 0 and stdout.splitlines() == ["latents from N(0, I)", f"wrote 2 samples to {out}"]
    rc, stdout, _ = cli(capsys, "sample", "--checkpoint", run, "--n", 3, "--individual", "--out", out,
                        "--prior", "normal")
    assert rc == 0 and stdout.splitlines() == ["latents from N(0, I)",
        f"wrote 3 samples to {out}", f"replaced 2 existing file(s) in {out}: sample-00000.png, sample-00001.png"]


def test_reconstruct_into_a_folder_writes_one_file_per_input(run, tmp_path, capsys):
    images = tmp_path / "images"
    gen = torch.Generator().manual_seed(1)
    for name in ("a.jpg", "a.png", "b.png"):
        save_image(torch.randint(0, 256, (3, 32, 32), generator=gen, dtype=torch.uint8), images / name)
    out = tmp_path / "recs"
    rc, stdout, err = cli(capsys, "reconstruct", "--checkpoint", run, "--images", images, "--out", out)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png", "b.png"]
    assert stdout.splitlines() == [f"wrote 3 reconstructions to {out}"]


# ----------------------------------------------------------------------------------------------
# 3. Image modes: 16-bit PNGs are scaled, not clipped to white; the rest decode or are refused.


def _png16(path: Path, array: np.ndarray) -> Path:
    """Write a 16-bit PNG (grayscale (H, W) or RGB (H, W, 3)) byte by byte: PIL cannot write 16-bit RGB."""
    h, w = array.shape[:2]
    color_type = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def _ramp16(shape) -> np.ndarray:
    """uint16 values spread over 0..~60000 (mean about 118 in 8-bit levels)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 60_600, shape).astype(np.uint16)


def test_16_bit_pngs_are_scaled_to_8_bits_in_datasets_and_tool_inputs(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    gray = _ramp16((RESOLUTION, RESOLUTION))
    rgb = _ramp16((RESOLUTION, RESOLUTION, 3))
    Image.fromarray(gray).save(root / "gray.png")  # PIL writes uint16 as a 16-bit PNG
    _png16(root / "rgb.png", rgb)
    assert Image.open(root / "gray.png").mode == "I;16"
    expected = {"gray.png": gray.mean() / 257, "rgb.png": rgb.mean() / 257}
    assert 110 < expected["gray.png"] < 125

    dataset = ImageFolder(root, RESOLUTION)
    from_tools = read_images(root, tiny_config())
    for i, path in enumerate(dataset.files):
        for image in (dataset[i], from_tools.images[i]):
            assert image.dtype == torch.uint8 and image.shape == (3, RESOLUTION, RESOLUTION)
            assert image.float().mean().item() == pytest.approx(expected[path.name], abs=1.5), path.name
    # The exact values: v / 257, rounded, in all three channels of the grayscale image.
    read = np.asarray(load_image(root / "gray.png"))
    np.testing.assert_array_equal(read, np.repeat(np.round(gray / 257)[..., None], 3, axis=2).astype(np.uint8))


def test_other_image_modes_decode_to_the_right_rgb(tmp_path):
    # Transparency goes on white, whatever carries it.
    la = Image.merge("LA", (Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 0)))
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png")).min() == 255
    opaque = Image.merge("LA", (Image.new("L", (8, 8), 40), Image.new("L", (8, 8), 255)))
    opaque.save(tmp_path / "la-opaque.png")
    assert (np.asarray(load_image(tmp_path / "la-opaque.png")) == 40).all()
    gray16 = np.full((8, 8), 1000, np.uint16)
    gray16[:4] = 30000
    im = Image.fromarray(gray16)
    im.save(tmp_path / "key.png", transparency=1000)  # colour-key transparency in a 16-bit image
    read = np.asarray(load_image(tmp_path / "key.png"))
    assert (read[4:] == 255).all() and (read[:4] == round(30000 / 257)).all()
    # 1-bit, palette with transparency, CMYK.
    Image.new("1", (8, 8), 1).save(tmp_path / "bw.png")
    assert (np.asarray(load_image(tmp_path / "bw.png")) == 255).all()
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    p.save(tmp_path / "p.png", transparency=0)
    assert (np.asarray(load_image(tmp_path / "p.png")) == [200, 10, 10]).all()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int) - [255, 0, 0]).max() <= 3


def test_float_pixels_are_refused_naming_the_file(run, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(images / "float.png", format="TIFF")  # a TIFF named .png
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "reconstruct", "--checkpoint", run, "--images", images, "--out", tmp_path / "r")
    assert_refused(rc, err, "reconstruct", images / "float.png", "floating-point")
    assert snapshot(tmp_path, run) == before


# ----------------------------------------------------------------------------------------------
# 4. Bad numbers and bad output paths: exit 2 with one line, before any work.


@pytest.mark.parametrize("command, extra, named", [
    ("reconstruct", ["--images", "{faces}", "--out", "{tmp}/r", "--limit", "-5"], "--limit"),
    ("reconstruct", ["--images", "{faces}", "--out", "{tmp}/r", "--limit", "0"], "--limit"),
    ("encode", ["--images", "{faces}", "--out", "{tmp}/z.safetensors", "--limit", "-1"], "--limit"),
    ("attribute", ["--attr", "smiling", "--n", "0", "--out", "{tmp}/a.png"], "--n"),
    ("attribute", ["--attr", "smiling", "--n", "-5", "--out", "{tmp}/a.png"], "--n"),
    ("attribute", ["--attr", "smiling", "--limit", "-2"], "--limit"),
    ("anomaly", ["--images", "{faces}", "--out", "{tmp}/s.csv", "--limit", "-1"], "--limit"),
    ("anomaly", ["--images", "{faces}", "--out", "{tmp}/s.csv", "--iw-samples", "-3"], "--iw-samples"),
    ("anomaly", ["--images", "{faces}", "--out", "{tmp}/s.csv", "--threshold", "nan"], "--threshold"),
    ("variations", ["--image", "{faces}/face0.png", "--out", "{tmp}/v.png", "--n", "0"], "--n"),
    ("interpolate", ["--a", "{faces}/face0.png", "--b", "{faces}/face1.png", "--out", "{tmp}/i.png",
                     "--steps", "1"], "--steps"),
    # image outputs need an image extension, and the message lists those that work
    ("sample", ["--out", "{tmp}/x.tmp"], ".jpg, .jpeg, .png, .webp, .bmp"),
    ("sample", ["--out", "{tmp}/x"], "{tmp}/x"),
    ("interpolate", ["--a", "{faces}/face0.png", "--b", "{faces}/face1.png", "--out", "{tmp}/i.gif"], ".webp"),
    # a file where a folder is needed, a folder where a file is, a file above the path
    ("sample", ["--individual", "--n", "2", "--out", "{faces}/face0.png"], "{faces}/face0.png"),
    ("reconstruct", ["--images", "{faces}", "--out", "{faces}/face0.png/sub"], "{faces}/face0.png"),
    ("sample", ["--out", "{faces}"], "{faces}"),
    ("sample", ["--out", "{faces}/face0.png/grid.png"], "{faces}/face0.png"),
    ("encode", ["--images", "{faces}", "--out", "{faces}"], "{faces}"),
    ("anomaly", ["--images", "{faces}", "--out", "{faces}"], "{faces}"),
    ("attribute", ["--attr", "smiling", "--save-vector", "{faces}"], "--save-vector"),
    ("fid", ["--num-samples", "4", "--extractor", "vaegan-random-conv", "--out", "{faces}"], "{faces}"),
])
def test_bad_arguments_exit_2_before_any_work(run, faces, tmp_path, capsys, monkeypatch, command, extra, named):
    import vaegan.evaluation.evaluate
    import vaegan.storage.pretrained
    import vaegan.tools.generate
    import vaegan.tools.latents

    loads = []
    real = vaegan.storage.pretrained.load_pretrained
    for module in (vaegan.storage.pretrained, vaegan.tools.generate, vaegan.tools.latents, vaegan.evaluation.evaluate):
        monkeypatch.setattr(module, "load_pretrained", lambda *a, **k: loads.append(a) or real(*a, **k))
    args = [a.format(faces=faces, tmp=tmp_path) for a in extra]
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, command, "--checkpoint", run, *args)
    assert_refused(rc, err, command, named.format(faces=faces, tmp=tmp_path))
    assert loads == []  # refused before the model was even loaded
    assert snapshot(tmp_path, run) == before


def test_decode_into_a_file_is_refused(run, faces, tmp_path, capsys):
    latents = save_latents(tmp_path / "z.safetensors", torch.randn(2, LATENT_DIM), ["a", "b"], RESOLUTION)
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "decode", latents, "--checkpoint", run, "--out", faces / "face0.png")
    assert_refused(rc, err, "decode", faces / "face0.png", "existing file")
    assert snapshot(tmp_path, run) == before


def test_a_latents_file_with_broken_metadata_is_refused(run, tmp_path, capsys):
    from safetensors.torch import save_file

    bad = tmp_path / "z.safetensors"
    save_file({"latents": torch.zeros(2, LATENT_DIM)}, str(bad), metadata={"format": "vaegan-latents-v1",
                                                                         "names": "not json", "resolution": "32"})
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "decode", bad, "--checkpoint", run, "--out", tmp_path / "out")
    assert_refused(rc, err, "decode", bad, "names")
    assert snapshot(tmp_path, run) == before


def test_compare_checks_every_run_before_evaluating_any(run, tmp_path, capsys, monkeypatch):
    import vaegan.evaluation.evaluate as evaluate

    evaluated = []
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: evaluated.append(a) or pytest.fail("evaluated"))
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "compare", "--runs", run, no_checkpoint, "--no-fid", "--num-samples", 4,
                     "--out", tmp_path / "report")
    assert_refused(rc, err, "compare", no_checkpoint)
    assert evaluated == []
    assert snapshot(tmp_path, run) == before

    (tmp_path / "report.txt").write_text("a file")
    before = snapshot(tmp_path, run)
    rc, _, err = cli(capsys, "compare", "--runs", run, "--no-fid", "--num-samples", 4, "--out", tmp_path / "report.txt")
    assert_refused(rc, err, "compare", tmp_path / "report.txt")
    assert evaluated == [] and snapshot(tmp_path, run) == before


@pytest.mark.parametrize("setting, key", [
    ("optim.lr=.inf", "optim.lr"),
    ("loss.beta=.nan", "loss.beta"),
    ("train.checkpoint_every_steps=-1", "train.checkpoint_every_steps"),
    ("train.keep_checkpoints=-2", "train.keep_checkpoints"),
    ("train.log_every_steps=0", "train.log_every_steps"),
    ("optim.beta2=1.0", "optim.beta2"),
    ("loss.gamma=-1e-3", "loss.gamma"),
])
def test_train_refuses_bad_numbers(tmp_path, capsys, setting, key):
    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  max_steps: 1\n")
    before = snapshot(tmp_path)
    # tiny and one step, so that code accepting the setting fails this test quickly
    rc, _, err = cli(capsys, "train", "--config", config, f"train.out_dir={tmp_path}", *TINY, "train.max_steps=1",
                     setting)
    assert_refused(rc, err, "train", f"'{key}'")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_train_refuses_an_empty_config_file(tmp_path, capsys, text):
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "train", "--config", config, f"train.out_dir={tmp_path}", *TINY, "train.max_steps=1")
    assert_refused(rc, err, "train", config, "no settings")
    assert snapshot(tmp_path) == before


def test_inception_weights_are_checked_from_the_bytes_handed_on(tmp_path, monkeypatch):
    """A file with the expected digest reaches torch-fidelity as those very bytes, not as a path."""
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"pretend weights")
    monkeypatch.setattr(features, "INCEPTION_SHA256", hashlib.sha256(b"pretend weights").hexdigest())
    seen = {}

    def create(name, layers, **kwargs):
        seen.update(kwargs)
        return torch.nn.Identity()

    monkeypatch.setattr(features, "create_feature_extractor", create)
    features.make_extractor(inception_weights=weights)
    handed = seen["feature_extractor_weights_path"]
    assert isinstance(handed, io.BytesIO) and handed.getvalue() == b"pretend weights"


def test_export_and_prepare_refuse_an_out_of_the_wrong_kind(run, tmp_path, capsys):
    """export needs a folder, prepare a file: the wrong kind is refused before anything is read."""
    a_file = tmp_path / "taken.txt"
    a_file.write_text("keep me")
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "export", "--checkpoint", run, "--out", a_file)
    assert_refused(rc, err, "export", a_file)
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart_vae.yaml"
    rc, _, err = cli(capsys, "prepare", "--config", config, "--out", a_folder)
    assert_refused(rc, err, "prepare", a_folder)
    assert snapshot(tmp_path) == before and a_file.read_text() == "keep me"
