"""Models on the Hugging Face Hub: ``hf://OWNER/NAME[@REVISION]`` sources and ``vaegan push``.

- :func:`resolve_source` turns ``hf://OWNER/NAME[@REVISION]`` into the local folder of that
  revision in the Hub cache (``huggingface_hub.snapshot_download``; ``HF_HUB_CACHE`` /
  ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` are read when called), downloading only
  ``*.safetensors`` and ``*.json`` files: no pickle, no code, no pictures. Every other source
  is returned unchanged, so :func:`vaegan.storage.pretrained.load_pretrained` and every
  command's ``--checkpoint`` take Hub models like local export folders.
- :func:`push_export` uploads an export folder (written by ``vaegan export``, model card
  included) to a model repo.

Both need the optional ``huggingface_hub`` package (``pip install vaegan[hub]``); without it
they raise a :class:`~vaegan.errors.VaeganError` saying so.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from vaegan.errors import InputError, MissingFileError, VaeganError

HF_PREFIX = "hf://"
ALLOW_PATTERNS = ["*.safetensors", "*.json"]  # weights, configs, the latent prior, metrics: never pickles or code
REPO_PLACEHOLDER = "OWNER/NAME"  # what a model card says until the repo is known (replaced by push_export)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INSTALL = "pip install 'vaegan[hub]' (or: pip install huggingface_hub)"
_LOGIN = "log in with `hf auth login` (or `huggingface-cli login`), or set HF_TOKEN"


class HubError(VaeganError):
    """The Hub could not be used: package missing, not logged in, no access, not reachable."""


def is_hub_source(source) -> bool:
    return isinstance(source, str) and source.startswith(HF_PREFIX)


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``"hf://OWNER/NAME[@REVISION]"`` -> ``("OWNER/NAME", REVISION or None)``; InputError if malformed."""
    body = source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else source
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id or (body.count("@") and not revision):
        raise InputError(f"{source!r} is not a Hub model: expected hf://OWNER/NAME or hf://OWNER/NAME@REVISION "
                         f"(a branch, tag or commit), e.g. hf://alice/vaegan-faces@main")
    return repo_id, revision or None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it has the form OWNER/NAME; InputError otherwise."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise InputError(f"--repo {repo_id!r}: expected OWNER/NAME (a user or organisation, then the model's name)")
    return repo_id


def hub():
    """The ``huggingface_hub`` module; HubError saying how to install it when it is missing."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"the Hugging Face Hub needs the huggingface_hub package: {_INSTALL}") from None
    return huggingface_hub


def _errors():
    """huggingface_hub's exception classes (``huggingface_hub.errors``; ``.utils`` in older versions)."""
    import importlib

    try:
        return importlib.import_module("huggingface_hub.errors")
    except ImportError:
        return importlib.import_module("huggingface_hub.utils")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_dir() -> str | None:
    """The Hub cache this process uses now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read now, not when huggingface_hub was imported)."""
    return _env_true("HF_HUB_OFFLINE")


def resolve_source(source):
    """The local folder of a ``hf://`` source (downloaded into the Hub cache if needed); anything else unchanged."""
    if not is_hub_source(source):
        return source
    repo_id, revision = parse_hub_source(source)
    return download(repo_id, revision)


def download(repo_id: str, revision: str | None = None) -> Path:
    """Snapshot folder of ``repo_id`` at ``revision`` (default: main), safetensors and JSON files only.

    Offline (``HF_HUB_OFFLINE=1``) only the local cache is read. MissingFileError when the repo,
    the revision or the cached copy does not exist, or the repo holds no ``model.safetensors``;
    HubError when the Hub refuses access or cannot be reached.
    """
    hf = hub()
    errors = _errors()
    source = f"{HF_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    local_only = offline()
    cache = cache_dir()
    try:
        folder = Path(hf.snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                           cache_dir=cache, local_files_only=local_only,
                                           library_name="vaegan", library_version=_version()))
    except getattr(errors, "GatedRepoError", ()) as e:
        raise HubError(f"{source}: the repo is gated; accept its terms on the Hub and {_LOGIN} ({_first_line(e)})") \
            from None
    except getattr(errors, "RepositoryNotFoundError", ()) as e:
        raise MissingFileError(f"{source}: no such model repo on the Hub, or it is private and you are not allowed "
                               f"to read it ({_LOGIN}); {_first_line(e)}") from None
    except getattr(errors, "RevisionNotFoundError", ()) as e:
        raise MissingFileError(f"{source}: the repo has no revision {revision or 'main'!r} (a branch, tag or commit); "
                               f"{_first_line(e)}") from None
    except getattr(errors, "LocalEntryNotFoundError", ()) as e:
        where = cache or "the default Hub cache"
        why = ("HF_HUB_OFFLINE is set, so only the local cache is read" if local_only
               else "the Hub could not be reached")
        raise MissingFileError(f"{source} is not in the local Hub cache ({where}) and {why}; download it once "
                               f"online (unset HF_HUB_OFFLINE), or point HF_HUB_CACHE at a cache that holds "
                               f"it ({_first_line(e)})") from None
    except getattr(errors, "HFValidationError", ()) as e:
        raise InputError(f"{source}: {_first_line(e)}") from None
    except getattr(errors, "HfHubHTTPError", ()) as e:
        raise HubError(f"{source}: the Hub refused the download ({_first_line(e)}); if the repo is private, "
                       f"{_LOGIN}") from None
    from vaegan.storage.pretrained import CONFIG_FILE, WEIGHTS_FILE

    if not (folder / WEIGHTS_FILE).is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise MissingFileError(f"{source}: the repo has no {WEIGHTS_FILE} (found: {', '.join(found) or 'no '}"
                               f"{'' if found else 'safetensors or JSON files'}); a vaegan model repo holds the "
                               f"{WEIGHTS_FILE} and {CONFIG_FILE} that 'vaegan export' writes")
    return folder


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vaegan")
    except PackageNotFoundError:
        return "unknown"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def push_export(export_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload an export folder to the Hub model repo ``repo_id`` (created if needed); return the commit's URL.

    ``revision``: a branch to push to (created from main if missing; default main). ``private``
    applies when the repo is created. The model card's ``OWNER/NAME`` placeholder is replaced by
    ``repo_id`` in the folder first, so its loading example names the real repo.
    """
    from vaegan.storage.pretrained import CONFIG_FILE, WEIGHTS_FILE

    folder = Path(export_dir)
    check_repo_id(repo_id)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE, "README.md") if not (folder / name).is_file()]
    if missing:
        raise MissingFileError(f"{folder} is not an export folder (missing {', '.join(missing)}); write one with: "
                               f"vaegan export --checkpoint RUN --out {folder}")
    hf = hub()
    errors = _errors()
    if token is None and not hf.get_token():
        raise HubError(f"not logged in to the Hugging Face Hub: {_LOGIN}")
    _name_repo_in_card(folder / "README.md", repo_id)
    api = hf.HfApi(token=token)
    message = commit_message or f"Upload vaegan export ({folder.name})"
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                                 commit_message=message, ignore_patterns=[".*", "**/.*"])
    except getattr(errors, "HfHubHTTPError", ()) as e:
        raise HubError(f"pushing {folder} to {repo_id} failed: {_first_line(e)} (check that you are logged in "
                       f"with write access: {_LOGIN})") from None
    return str(getattr(info, "commit_url", None) or info)


def _name_repo_in_card(card: Path, repo_id: str) -> None:
    from vaegan.files import write_text_atomic

    text = card.read_text()
    if f"{HF_PREFIX}{REPO_PLACEHOLDER}" in text:
        write_text_atomic(card, text.replace(f"{HF_PREFIX}{REPO_PLACEHOLDER}", f"{HF_PREFIX}{repo_id}"))
