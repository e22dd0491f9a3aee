"""transformers backend: the Thinker of any supported omni family
(:mod:`maple_data.models.families`), CPU or GPU, batched. Inputs come from
:class:`~maple_data.models.omni_inputs.OmniEncoder` (no torchvision); logits are computed for
the last position only (:func:`~maple_data.models.heads.logits_for`); the vision and audio
towers encode each media object once, however many prompts carry it (an item's modality
subsets, its samples: :class:`~maple_data.models.towers.TowerCache`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

from maple_data.answers import option_letter
from maple_data.models.families import omni_family
from maple_data.models.heads import logits_for
from maple_data.models.model_source import check_model
from maple_data.models.omni_inputs import OmniEncoder, to_device
from maple_data.models.prompts import Prompt
from maple_data.models.towers import TowerCache


class HFBackend:
    """Ablation inference with a transformers model folder or hub id.

    Args:
        model: an omni model folder or hub id (its Thinker is used; a bare Thinker folder
            too); any other model is refused in one line.
        device: ``cpu``, ``cuda``, ``cuda:1``... or ``auto`` (CUDA when available).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bf16 on CUDA, else fp32).
        batch_size: sequences per forward pass.
        seed: sampling seed.
    """

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 seed: int = 0) -> None:
        import torch

        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        chosen = (torch.bfloat16 if self.device.startswith("cuda") else torch.float32) if dtype == "auto" \
            else dtypes[dtype]
        model = check_model(model)
        family = omni_family(model)
        self.model = family.load_thinker(model, dtype=chosen)
        self.model.to(self.device).eval()
        self.encoder = OmniEncoder(model, family=family)
        self.towers = TowerCache(self.model, family)
        self.tokenizer = self.encoder.tokenizer
        self.batch_size = batch_size
        torch.manual_seed(seed)

    @classmethod
    def from_model(cls, model, encoder: OmniEncoder, *, batch_size: int = 8) -> HFBackend:
        """A backend around a model already in memory (e.g. a policy while it trains);
        ``encoder`` holds its tokenizer and processor settings. Its towers run for every
        prompt (no cache is attached to a model that trains)."""
        import torch

        backend = cls.__new__(cls)
        backend.torch, backend.model, backend.encoder = torch, model, encoder
        backend.device = str(next(model.parameters()).device)
        backend.tokenizer, backend.batch_size, backend.towers = encoder.tokenizer, batch_size, None
        return backend

    @contextmanager
    def _forward(self, prompts: Sequence[Prompt]) -> Iterator[dict]:
        """The batch's inputs, inside a block where the model computes the last position's
        logits only and its towers encode each of the batch's media objects once."""
        prepared = self.encoder.prepare_batch(prompts)
        inputs = to_device(self.encoder.collate(prepared), self.device, self.model.dtype)
        media = ([p.video for p in prepared if p.video is not None], [p.audio for p in prepared if p.audio is not None])
        with self.torch.no_grad(), logits_for(self.model, -1), (self.towers.batch(*media) if self.towers
                                                                else nullcontext()):
            yield inputs

    # ------------------------------------------------------------ protocol

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        flat = [p for p in prompts for _ in range(n)]
        texts: list[str] = []
        for start in range(0, len(flat), self.batch_size):
            with self._forward(flat[start:start + self.batch_size]) as inputs:
                out = self.model.generate(**inputs, do_sample=temperature > 0, temperature=temperature or None,
                                          top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                                          use_audio_in_video=False)
            new = out[:, inputs["input_ids"].shape[1]:]
            texts += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        torch = self.torch
        result: list[list[float]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            with self._forward(chunk) as inputs:
                logits = self.model(**inputs, use_audio_in_video=False).logits[:, -1, :].float()
            for row, opts in zip(logits, options[start:start + len(chunk)]):
                letter_ids = [self.tokenizer.encode(option_letter(i), add_special_tokens=False)[0]
                              for i in range(len(opts))]
                result.append(torch.softmax(row[letter_ids], dim=0).tolist())
        return result
