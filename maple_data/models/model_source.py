"""Where a model comes from: a local folder, the local Hub cache, or the Hub itself; checked
before any weights are loaded so that an offline or mistyped model fails in one line."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from maple_data.errors import MapleError

LOCAL_MODEL_HINT = "pass a local model folder, e.g. MODEL=$(maple-rl pretrain --print-path) for maple's tiny model"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") != 1 or "\\" in name


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the Hub endpoint accepts a TCP connection, else why not."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as exc:
        return f"{url.hostname}: {exc.strerror or exc}"
    return None


def check_model(name: str) -> str:
    """``name`` when it can be loaded: a local folder with a ``config.json``, a Hub id in
    the local cache, or a Hub id while the Hub is reachable. Otherwise a
    :class:`MapleError` saying which and what to do (no download retries)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MapleError(f"model folder {path} has no config.json (not a saved model?)")
        return str(path)
    if _looks_like_path(name):
        raise MapleError(f"model folder {name} not found; {LOCAL_MODEL_HINT}")
    if _hub_cached(name):
        return name
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "yes"):
        raise MapleError(f"model {name} is not a local folder nor in the Hub cache, and HF_HUB_OFFLINE is set; "
                         f"{LOCAL_MODEL_HINT}")
    unreachable = _hub_reachable()
    if unreachable:
        raise MapleError(f"model {name} is not a local folder nor in the Hub cache, and the Hub cannot be reached "
                         f"({unreachable}); set HF_HUB_OFFLINE=1 and {LOCAL_MODEL_HINT}")
    return name


def model_config(name: str, filename: str = "config.json") -> dict:
    """A model's ``config.json`` (or another JSON file of it, e.g. ``preprocessor_config.json``)
    as a dict: a local folder's (``{}`` when it has none), or a Hub id's from the local cache,
    downloaded when the Hub is reachable ({} when neither)."""
    path = Path(name).expanduser()
    if path.is_dir() or _looks_like_path(name):
        config = path / filename
        return json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(name, filename)
    try:
        found = cached if isinstance(cached, str) else hf_hub_download(name, filename)
    except (OSError, ValueError):
        return {}
    return json.loads(Path(found).read_text(encoding="utf-8"))
