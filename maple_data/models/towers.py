"""Encoder outputs computed once per media object during inference.

Annotation builds every modality subset of an item from the same decoded frames and audio
(and samples each subset's prompt several times), so without help the vision tower would
encode an item's video once per prompt that holds it, and the audio tower its audio
likewise. :class:`TowerCache` sits in front of an omni Thinker's ``get_video_features`` /
``get_audio_features``: the backend names the media objects of each batch
(:meth:`TowerCache.batch`, the encoder's feature objects, shared by every prompt of the
item), and the towers encode only those not seen yet, all in one pass; the batch's outputs
are reassembled from the cache. Outside a ``batch`` block the towers run as usual (e.g.
in training, where they need gradients). The vLLM backend needs none of this: vLLM's
encoder cache shares the embeddings of identical media items (by content hash) between
requests.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from maple_data.models.families import ModelFamily


def _split(output: Any, index: int, count: int) -> dict[str, Any]:
    """One video's part of a batch's video-tower output: every field that holds one tensor
    per video (``pooler_output``), or one such tuple per level (``deepstack_features``)."""
    part = {}
    for name, value in output.items():
        if isinstance(value, (tuple, list)) and len(value) == count and all(hasattr(v, "shape") for v in value):
            part[name] = value[index].clone()
        elif isinstance(value, (tuple, list)) and value and all(
                isinstance(level, (tuple, list)) and len(level) == count for level in value):
            part[name] = [level[index].clone() for level in value]
    return part


def _join(kind: type, parts: Sequence[dict[str, Any]]) -> Any:
    """A batch's video-tower output of type ``kind`` from its videos' parts, in order."""
    fields = {}
    for name, first in parts[0].items():
        if isinstance(first, list):
            fields[name] = [tuple(p[name][level] for p in parts) for level in range(len(first))]
        else:
            fields[name] = tuple(p[name] for p in parts)
    return kind(**fields)


class TowerCache:
    """Video- and audio-tower outputs of the last ``size`` media objects of each kind, for
    a Thinker of ``family`` (see the module docstring). ``encoded`` counts the media
    objects each tower encoded (``video``, ``audio``)."""

    def __init__(self, model: Any, family: ModelFamily, size: int = 16) -> None:
        self.family, self.size = family, size
        inner = family.media_holder(model)
        self._towers = {"video": inner.get_video_features, "audio": inner.get_audio_features}
        inner.get_video_features, inner.get_audio_features = self._video, self._audio
        self._store: dict[str, OrderedDict[int, tuple[Any, Any]]] = {"video": OrderedDict(), "audio": OrderedDict()}
        self._batch: dict[str, Sequence[Any] | None] = {"video": None, "audio": None}
        self._kind: type | None = None
        self.encoded: Counter = Counter()

    @contextmanager
    def batch(self, videos: Sequence[Any], audios: Sequence[Any]) -> Iterator[None]:
        """Within the block, the model's forward passes carry these media objects (one per
        video and per audio of the batch, in order; the same object for the same media)."""
        self._batch = {"video": list(videos), "audio": list(audios)}
        try:
            yield
        finally:
            self._batch = {"video": None, "audio": None}

    def _split_batch(self, kind: str) -> tuple[dict[int, Any], list[int]]:
        """The batch's cached outputs by media id, and the indices of the first occurrence of
        each media object still to encode (the cache may be smaller than a batch: what the
        batch needs is held here, whatever the cache evicts meanwhile)."""
        store, found, missing, pending = self._store[kind], {}, [], set()
        for index, media in enumerate(self._batch[kind]):
            key = id(media)
            if key in store:
                store.move_to_end(key)
                found[key] = store[key][1]
            elif key not in pending:
                pending.add(key)
                missing.append(index)
        return found, missing

    def _put(self, kind: str, media: Any, value: Any) -> None:
        store = self._store[kind]
        store[id(media)] = (media, value)  # holds the object: its id is not reused while cached
        while len(store) > self.size:
            store.popitem(last=False)

    def _video(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        media = self._batch["video"]
        if media is None or video_grid_thw is None or len(media) != len(video_grid_thw):
            return self._towers["video"](pixel_values_videos, video_grid_thw, **kwargs)
        sizes = video_grid_thw.prod(-1).tolist()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        found, missing = self._split_batch("video")
        if missing:
            import torch

            pixels = torch.cat([pixel_values_videos[starts[i]:starts[i] + sizes[i]] for i in missing])
            output = self._towers["video"](pixels, video_grid_thw[missing], **kwargs)
            self._kind = type(output)
            for j, i in enumerate(missing):
                found[id(media[i])] = _split(output, j, len(missing))
                self._put("video", media[i], found[id(media[i])])
            self.encoded["video"] += len(missing)
        return _join(self._kind, [found[id(m)] for m in media])

    def _audio(self, input_features, feature_attention_mask=None, audio_feature_lengths=None, **kwargs):
        media = self._batch["audio"]
        if media is None or feature_attention_mask is None or len(media) != input_features.shape[0]:
            return self._towers["audio"](input_features, feature_attention_mask, audio_feature_lengths, **kwargs)
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        found, missing = self._split_batch("audio")
        if missing:
            lengths = feature_attention_mask[missing].sum(-1).tolist()
            output = self._towers["audio"](input_features[missing], feature_attention_mask[missing], None, **kwargs)
            pieces = output.last_hidden_state.split([self.family.audio_tokens(int(n)) for n in lengths])
            for piece, i in zip(pieces, missing):
                found[id(media[i])] = piece.clone()
                self._put("audio", media[i], found[id(media[i])])
            self.encoded["audio"] += len(missing)
        hidden = torch.cat([found[id(m)] for m in media])
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden)
