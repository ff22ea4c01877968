"""hf://OWNER/NAME[@REVISION] sources and `vaegan push`, without a network.

Loading reads a Hub cache laid out in a temporary folder as ``snapshot_download`` keeps it
(``models--OWNER--NAME/refs/<ref>`` naming a commit, ``snapshots/<commit>/<files>``), with
``HF_HUB_OFFLINE=1``; what the online path hands to huggingface_hub and how its errors read is
checked with the library's functions replaced.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import vaegan
from vaegan.cli import main
from vaegan.errors import InputError, MissingFileError, VaeganError
from vaegan.files import write_safetensors, write_text_atomic
from vaegan.models import build_vae
from vaegan.storage import hub
from vaegan.storage.configs import export_config
from vaegan.storage.export import export_model, export_state
from vaegan.storage.pretrained import load_pretrained

from conftest import tiny_config

pytest.importorskip("huggingface_hub")  # a dependency of accelerate: always installed with vaegan

MAIN, V1 = "a" * 40, "b" * 40  # commits


def random_export(folder: Path, seed: int, *overrides: str) -> Path:
    """model.safetensors + config.json of an untrained tiny model (weights from ``seed``)."""
    import json

    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    vae = build_vae(cfg.model, cfg.data.resolution)
    write_safetensors(folder / "model.safetensors", export_state(vae), {"format": "vaegan-export-v2"})
    write_text_atomic(folder / "config.json", json.dumps(export_config(cfg)))
    return folder


def seed_cache(cache: Path, repo: str, refs: dict[str, str], files: dict[str, Path]) -> None:
    """``refs``: {ref: commit}; ``files``: {commit: folder whose files the snapshot holds}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for ref, commit in refs.items():
        (root / "refs" / ref).write_text(commit)
    for commit, folder in files.items():
        snapshot = root / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            (snapshot / f.name).write_bytes(f.read_bytes())


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> dict:
    """An offline Hub cache: alice/faces at main and v1 (other weights), alice/empty without weights."""
    main_src = random_export(tmp_path / "main", 0)
    v1_src = random_export(tmp_path / "v1", 1)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((main_src / "config.json").read_text())
    cache = tmp_path / "cache"
    seed_cache(cache, "alice/faces", {"main": MAIN, "v1": V1}, {MAIN: main_src, V1: v1_src})
    seed_cache(cache, "alice/empty", {"main": MAIN}, {MAIN: no_weights})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {"cache": cache, "main": main_src, "v1": v1_src}


def _decode(vae) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(0)))


def test_load_pretrained_reads_hub_models_from_the_cache_offline(hub_cache):
    local = load_pretrained(hub_cache["main"])
    remote = vaegan.load_pretrained("hf://alice/faces")
    assert Path(remote.info["source"]) == hub_cache["cache"] / "models--alice--faces" / "snapshots" / MAIN
    assert torch.equal(_decode(remote.vae), _decode(local.vae))
    assert remote.config.to_dict() == local.config.to_dict()
    # A branch or tag, and a commit, pick that revision's weights.
    v1 = load_pretrained(hub_cache["v1"])
    for source in ("hf://alice/faces@v1", f"hf://alice/faces@{V1}"):
        assert torch.equal(_decode(load_pretrained(source).vae), _decode(v1.vae))
    assert not torch.equal(_decode(v1.vae), _decode(local.vae))


def test_hf_HOME_sets_the_cache_too(hub_cache, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home).mkdir()
    hub_cache["cache"].rename(home / "hub")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))
    assert Path(load_pretrained("hf://alice/faces").info["source"]).parent.parent.parent == home / "hub"


def test_every_command_takes_hf_checkpoints(hub_cache, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "--checkpoint", "hf://alice/faces", "--n", "4", "--out", str(out / "hub.png")]) == 0
    assert main(["sample", "--checkpoint", str(hub_cache["main"]), "--n", "4", "--out", str(out / "local.png")]) == 0
    assert (out / "hub.png").read_bytes() == (out / "local.png").read_bytes()
    assert main(["encode", "--checkpoint", "hf://alice/faces@v1", "--images", "split:val", "--limit", "4",
                 "--out", str(out / "z.safetensors")]) == 0
    # An export of a Hub model is a local export folder with its card.
    assert main(["export", "--checkpoint", "hf://alice/faces", "--out", str(out / "exp")]) == 0
    assert torch.equal(_decode(load_pretrained(out / "exp").vae), _decode(load_pretrained(hub_cache["main"]).vae))
    assert "hf://alice/faces" in (out / "exp" / "README.md").read_text()
    # The evaluation commands take Hub models beside local folders (named after the repo).
    assert main(["summarize", "--runs", "hf://alice/faces@v1", str(out / "exp"), "--num-images", "16",
                 "--out", str(out / "summary")]) == 0
    runs = json.loads((out / "summary" / "metrics.json").read_text())["runs"]
    assert list(runs) == ["faces", "exp"] and runs["faces"]["path"] == "hf://alice/faces@v1"


def test_missing_repo_revision_or_weights_are_clear_errors(hub_cache, tmp_path, capsys):
    with pytest.raises(MissingFileError, match=r"hf://alice/nope is not in the local Hub cache .*HF_HUB_OFFLINE"):
        load_pretrained("hf://alice/nope")
    with pytest.raises(MissingFileError, match=r"hf://alice/faces@v9 is not in the local Hub cache"):
        load_pretrained("hf://alice/faces@v9")
    with pytest.raises(MissingFileError, match=r"hf://alice/empty: the repo has no model\.safetensors "
                                               r"\(found: config\.json\)"):
        load_pretrained("hf://alice/empty")
    for bad in ("hf://alice", "hf://alice/faces@", "hf://a/b/c", "hf://../x"):
        with pytest.raises(InputError, match="expected hf://OWNER/NAME"):
            load_pretrained(bad)
    assert main(["sample", "--checkpoint", "hf://alice/nope", "--n", "1", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegan sample: error: hf://alice/nope is not in the local Hub cache") and "\n" == err[-1]


def test_online_downloads_ask_for_safetensors_and_json_only(hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(hub_cache["v1"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert torch.equal(_decode(load_pretrained("hf://alice/faces@dev").vae),
                       _decode(load_pretrained(hub_cache["v1"]).vae))
    (repo_id, kwargs), = calls
    assert repo_id == "alice/faces" and kwargs["revision"] == "dev" and kwargs["local_files_only"] is False
    assert kwargs["allow_patterns"] == ["*.safetensors", "*.json"]  # no pickles, no code
    assert kwargs["cache_dir"] == str(hub_cache["cache"])


def _raises(error_class, message: str):
    def fake(*args, **kwargs):
        error = error_class.__new__(error_class)
        Exception.__init__(error, message)
        raise error
    return fake


@pytest.mark.parametrize("name, expected", [
    ("RepositoryNotFoundError", r"hf://alice/secret: no such model repo on the Hub, or it is private"),
    ("RevisionNotFoundError", r"hf://alice/secret: the repo has no revision 'main'"),
    ("GatedRepoError", r"hf://alice/secret: the repo is gated"),
    ("LocalEntryNotFoundError", r"hf://alice/secret is not in the local Hub cache .* the Hub could not be reached"),
])
def test_hub_errors_are_vaegan_errors_that_say_what_to_do(hub_cache, monkeypatch, name, expected):
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _raises(getattr(errors, name), "404 Client Error"))
    with pytest.raises(VaeganError, match=expected):
        load_pretrained("hf://alice/secret")


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(VaeganError, match=r"pip install 'vaegan\[hub\]'"):
        load_pretrained("hf://alice/faces")
    random_export(tmp_path, 0)
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(VaeganError, match=r"pip install 'vaegan\[hub\]'"):
        hub.push_export(tmp_path, "alice/faces")


class FakeApi:
    """Records what vaegan asks of huggingface_hub.HfApi."""

    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        FakeApi.calls.append(("files", files))
        return type("CommitInfo", (), {"commit_url": f"https://hub.example/{kwargs['repo_id']}/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    return FakeApi.calls


@pytest.fixture
def exported(tmp_path) -> Path:
    return export_model(random_export(tmp_path / "src", 0), tmp_path / "export")


def test_push_uploads_the_export_folder_to_the_repo_and_revision(exported, fake_hub, capsys):
    assert "hf://OWNER/NAME" in (exported / "README.md").read_text()
    assert main(["push", "--export", str(exported), "--repo", "alice/faces", "--private", "--revision", "dev"]) == 0
    calls = dict(fake_hub[1:])
    assert calls["create_repo"] == {"repo_id": "alice/faces", "repo_type": "model", "private": True, "exist_ok": True}
    assert calls["create_branch"] == {"repo_id": "alice/faces", "branch": "dev", "repo_type": "model",
                                      "exist_ok": True}
    upload = calls["upload_folder"]
    assert (upload["repo_id"], upload["revision"], Path(upload["folder_path"])) == ("alice/faces", "dev", exported)
    assert upload["repo_type"] == "model"
    assert {"model.safetensors", "config.json", "README.md", "samples.png"} <= set(calls["files"])
    # The card's loading example now names the repo.
    card = (exported / "README.md").read_text()
    assert "hf://alice/faces" in card and "OWNER/NAME" not in card
    out = capsys.readouterr().out
    assert "https://hub.example/alice/faces/commit/1" in out and 'load_pretrained("hf://alice/faces@dev")' in out


def test_push_api_defaults_to_main_and_public(exported, fake_hub):
    url = vaegan.push_export(exported, "alice/faces")
    calls = dict(fake_hub[1:])
    assert url == "https://hub.example/alice/faces/commit/1"
    assert calls["create_repo"]["private"] is False and "create_branch" not in calls
    assert calls["upload_folder"]["revision"] is None


def test_push_refuses_without_login_or_export(exported, fake_hub, monkeypatch, tmp_path, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", "--export", str(exported), "--repo", "alice/faces"]) == 2
    assert "not logged in to the Hugging Face Hub" in capsys.readouterr().err
    assert not [c for c in fake_hub if c[0] == "upload_folder"]
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "tok")
    assert main(["push", "--export", str(tmp_path / "nothing"), "--repo", "alice/faces"]) == 2
    assert "is not an export folder" in capsys.readouterr().err
    assert main(["push", "--export", str(exported), "--repo", "faces"]) == 2
    assert "expected OWNER/NAME" in capsys.readouterr().err
