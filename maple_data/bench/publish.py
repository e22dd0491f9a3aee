"""``maple-data publish``: check a benchmark folder, then upload it to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def card_configs(bench: Path) -> list[dict]:
    """The ``configs`` of the dataset card's YAML header."""
    readme = bench / "README.md"
    if not readme.exists():
        raise ValueError(f"{readme} is missing: build the folder with maple-data build-bench")
    parts = readme.read_text(encoding="utf-8").split("---")
    header = yaml.safe_load(parts[1]) if len(parts) >= 3 else None
    if not isinstance(header, dict) or not header.get("configs"):
        raise ValueError(f"{readme} has no YAML header with `configs`")
    return header["configs"]


def repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a Hub repo id (``name`` or ``namespace/name``), or None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return f"--repo-id {repo_id!r} is not a Hub repo id: {str(exc).split(': ')[0]} (e.g. your-name/maple-bench)"
    return None


def check_bench(bench: str | Path) -> list[str]:
    """Problems that would make the uploaded dataset unloadable (empty when fine)."""
    bench = Path(bench)
    try:
        configs = card_configs(bench)
    except ValueError as exc:
        return [str(exc)]
    return [f"config {c['config_name']} split {f['split']}: no file matches {f['path']}"
            for c in configs for f in c["data_files"] if not list(bench.glob(f["path"]))]


def upload_plan(bench: str | Path) -> list[tuple[str, int]]:
    """``(relative path, bytes)`` of every file that would be uploaded."""
    bench = Path(bench)
    return [(p.relative_to(bench).as_posix(), p.stat().st_size) for p in sorted(bench.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(bench).parts)]


def resolve_token(token: str | None) -> str:
    """``token``, else ``HF_TOKEN``, else the cached ``huggingface-cli login`` token."""
    from huggingface_hub import get_token

    found = token or os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise ValueError("no Hugging Face token: pass --token, set HF_TOKEN, or run `huggingface-cli login`")
    return found


def publish(bench: str | Path, repo_id: str, token: str, *, private: bool = False,
            message: str = "Upload benchmark built with maple-data build-bench") -> str:
    """Create the dataset repo if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(bench), repo_id=repo_id, repo_type="dataset", commit_message=message)
    return str(info)
