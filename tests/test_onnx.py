"""`vaegan export --onnx`: encoder.onnx and decoder.onnx run by onnxruntime match the torch modules."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaegan.cli import main
from vaegan.files import write_safetensors, write_text_atomic
from vaegan.models import build_vae
from vaegan.storage.configs import export_config
from vaegan.storage.export import export_model, export_state
from vaegan.storage.pretrained import load_pretrained

from conftest import tiny_config

onnx = pytest.importorskip("onnx")  # in the test extra: pip install -e .[test]
ort = pytest.importorskip("onnxruntime")

README = Path(__file__).resolve().parents[1] / "README.md"
TOLERANCE = 1e-4


def _random_source(folder: Path, *overrides: str) -> Path:
    """An export folder of an untrained model with non-trivial batch-norm statistics."""
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    vae = build_vae(cfg.model, cfg.data.resolution)
    for m in vae.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if getattr(m, "has_prior_statistics", False):  # the decoder's: N(0, I) draws normalise apart
                m.prior_mean.uniform_(-0.5, 0.5), m.prior_var.uniform_(0.5, 2.0), m.prior_batches_tracked.fill_(1)
    write_safetensors(folder / "model.safetensors", export_state(vae), {"format": "vaegan-export-v2"})
    write_text_atomic(folder / "config.json", json.dumps(export_config(cfg)))
    return folder


def _session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_differences(folder: Path) -> dict[str, float]:
    """Largest |onnxruntime - torch| of each output, over batches of 1 and 7."""
    vae = load_pretrained(folder).vae
    assert not vae.training
    dim = vae.latent_dim
    res = json.loads((folder / "config.json").read_text())["resolution"]
    encoder, decoder = _session(folder / "encoder.onnx"), _session(folder / "decoder.onnx")
    prior_decoder = _session(folder / "prior_decoder.onnx")
    worst = {"mean": 0.0, "logvar": 0.0, "image": 0.0, "prior_image": 0.0}
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 7):
        x = torch.rand(batch, 3, res, res, generator=gen) * 2 - 1
        z = torch.randn(batch, dim, generator=gen)
        with torch.no_grad():
            posterior, image, prior_image = vae.encode(x), vae.decode(z), vae.decode(z, from_prior=True)
        mean, logvar = encoder.run(["mean", "logvar"], {"image": x.numpy()})
        decoded, = decoder.run(["image"], {"latent": z.numpy()})
        prior_decoded, = prior_decoder.run(["image"], {"latent": z.numpy()})
        assert mean.shape == logvar.shape == (batch, dim) and decoded.shape == (batch, 3, res, res)
        assert mean.dtype == logvar.dtype == decoded.dtype == np.float32
        assert decoded.min() >= -1 and decoded.max() <= 1
        for name, got, want in (("mean", mean, posterior.mean), ("logvar", logvar, posterior.logvar),
                                ("image", decoded, image), ("prior_image", prior_decoded, prior_image)):
            worst[name] = max(worst[name], float(np.abs(got - want.numpy()).max()))
    return worst


@pytest.mark.parametrize("setting", ["trained", "group-norm-resize-64px"])
def test_onnx_matches_torch_in_eval_mode(setting, trained_vaegan_run, tmp_path, record_property):
    if setting == "trained":  # batch norm, transposed convs, EMA weights of a real run
        source = trained_vaegan_run
    else:
        source = _random_source(tmp_path / "src", "model.norm=group", "model.upsample=resize",
                                "data.resolution=64", "model.latent_dim=16")
    out = export_model(source, tmp_path / "export", onnx=True)
    worst = _max_differences(out)
    record_property("onnx_max_abs_diff", worst)
    print(f"\nONNX vs torch ({setting}), max abs difference over batches 1 and 7: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) <= TOLERANCE, worst


def test_onnx_graphs_name_their_inputs_outputs_and_a_dynamic_batch(tmp_path):
    out = export_model(_random_source(tmp_path / "src"), tmp_path / "export", onnx=True)
    for name, inputs, outputs in (("encoder.onnx", ["image"], ["mean", "logvar"]),
                                  ("decoder.onnx", ["latent"], ["image"]),
                                  ("prior_decoder.onnx", ["latent"], ["image"])):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == inputs and [o.name for o in model.graph.output] == outputs
        for value in [*model.graph.input, *model.graph.output]:
            first = value.type.tensor_type.shape.dim[0]
            assert first.dim_param == "batch" and not first.dim_value
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    card = (out / "README.md").read_text()
    assert "## ONNX" in card and "`image` float32 (batch, 3, 32, 32), RGB in [-1, 1]" in card
    assert "`latent` float32 (batch, 32)" in card and "`logvar`" in card


def test_cli_export_onnx_and_a_later_export_without_it_removes_the_stale_files(trained_vaegan_run, tmp_path,
                                                                                capsys):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(trained_vaegan_run), "--out", str(out), "--onnx"]) == 0
    assert all((out / f).is_file() for f in ("encoder.onnx", "decoder.onnx", "prior_decoder.onnx"))
    assert "decoder.onnx" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(trained_vaegan_run), "--out", str(out)]) == 0
    assert not any((out / f).exists() for f in ("encoder.onnx", "decoder.onnx", "prior_decoder.onnx"))
    assert "## ONNX" not in (out / "README.md").read_text()


def test_readme_samples_faces_with_onnxruntime_and_numpy_only(tmp_path):
    """The README's example, run as written, in a process where torch cannot be imported."""
    text = README.read_text()
    block = re.search(r"```python\n(# Sample faces with onnxruntime and numpy only.*?)```", text, re.S)
    assert block, "README.md lost its onnxruntime example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 12 and "import torch" not in code and "vaegan" not in code
    export_model(_random_source(tmp_path / "src"), tmp_path / "exports" / "faces", onnx=True)
    script = "import sys\nsys.modules['torch'] = None  # no torch in this process\n" + code
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    with Image.open(tmp_path / "faces.png") as im:
        assert im.size == (4 * 32, 4 * 32) and im.mode == "RGB"


def test_readme_samples_the_fitted_prior_with_numpy_and_onnxruntime_only(tmp_path):
    """The README's mixture example, run as written without torch: its latents follow the mixture
    (component by weight, then mean + scale_tril @ eps; a transposed factor or a wrong component
    shows) and decode as vaegan decodes mixture latents (the decoder's statistics of codes)."""
    from vaegan.models.gmm import GaussianMixture
    from vaegan.models.inference import decode_latents

    text = README.read_text()
    block = re.search(r"```python\n(# Sample faces from the fitted latent prior.*?)```", text, re.S)
    assert block, "README.md lost its fitted-prior onnxruntime example"
    code = block.group(1)
    assert "import torch" not in code and "vaegan" not in code
    folder = export_model(_random_source(tmp_path / "src"), tmp_path / "exports" / "faces", onnx=True)
    d = json.loads((folder / "config.json").read_text())["model"]["latent_dim"]
    means = torch.zeros(2, d, dtype=torch.float64)
    means[0, 0], means[1, 0] = 5.0, -5.0
    tril = 0.01 * torch.eye(d, dtype=torch.float64).expand(2, d, d).clone()
    tril[:, 1, 0] = 3.0  # z[1] - mean[1] = 300 (z[0] - mean[0]) + small; transposed it would not be
    GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), means, tril).save(folder / "latent_prior.safetensors")
    script = "import sys\nsys.modules['torch'] = None  # no torch in this process\n" + code + "\nnp.save('z.npy', z)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    z = torch.from_numpy(np.load(tmp_path / "z.npy")).double()
    k = (z[:, 0] < 0).long()
    assert 0 < k.sum() < 16  # both components drawn
    offset = z - means[k]
    torch.testing.assert_close(offset[:, 1], 300 * offset[:, 0], atol=0.1, rtol=0)
    assert offset[:, 2:].abs().max() < 0.1
    from PIL import Image

    with Image.open(tmp_path / "faces.png") as im:
        faces = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    vae = load_pretrained(folder).vae
    want = torch.cat(list(decode_latents(vae, z.float())), dim=2)  # (3, R, 16 R): the row of 16
    assert faces.shape == want.shape and (faces.int() - want.int()).abs().max() <= 1
