"""vLLM backend (GPU; the ``vllm`` extra): offline engine, prefix caching on.

Requests follow vLLM's documented multimodal input format for Qwen2.5-Omni: the chat
text with one placeholder per medium (vLLM expands it) and ``multi_modal_data`` holding
``video`` as a ``(T, H, W, 3)`` uint8 array and ``audio`` as ``(samples, 16000)``; audio
is a separate stream (``use_audio_in_video=False``). Request building is pure and
tested without vLLM; the engine itself needs a GPU machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from maple_data.answers import option_letter
from maple_data.backends.chat import QWEN2_5_OMNI, QWEN3_OMNI, PlaceholderTokens, render_chat
from maple_data.backends.model_source import check_model
from maple_data.errors import MissingExtra
from maple_data.prompts import Prompt
from maple_data.schema import AUDIO_SAMPLE_RATE

TOP_LOGPROBS = 20  # logprobs returned per position; options outside them get probability 0


def placeholder_tokens(model: str) -> PlaceholderTokens:
    return QWEN3_OMNI if "qwen3" in model.lower() else QWEN2_5_OMNI


def build_request(prompt: Prompt, tokens: PlaceholderTokens = QWEN2_5_OMNI) -> dict[str, Any]:
    """One ``LLM.generate`` input for ``prompt``."""
    request: dict[str, Any] = {"prompt": render_chat(prompt, 1, 1, tokens)}
    media: dict[str, Any] = {}
    if prompt.frames is not None:
        media["video"] = np.stack(prompt.frames).astype(np.uint8)
    if prompt.audio is not None:
        media["audio"] = (np.asarray(prompt.audio, dtype=np.float32), AUDIO_SAMPLE_RATE)
    if media:
        request["multi_modal_data"] = media
        request["mm_processor_kwargs"] = {"use_audio_in_video": False}
    return request


def sampling_kwargs(n: int, temperature: float, max_new_tokens: int, seed: int | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``n`` samples."""
    return {"n": n, "temperature": temperature, "max_tokens": max_new_tokens, "seed": seed}


def option_distribution(top_logprobs: dict[str, float], n_options: int) -> list[float]:
    """Probabilities of the option letters, renormalised over the options, from a
    ``{decoded token: logprob}`` map of the first answer position (letters absent from it
    get 0; all absent gives the uniform distribution)."""
    logps = [top_logprobs.get(option_letter(i), -math.inf) for i in range(n_options)]
    top = max(logps)
    if top == -math.inf:
        return [1.0 / n_options] * n_options
    weights = [math.exp(lp - top) for lp in logps]
    return [w / sum(weights) for w in weights]


class VLLMBackend:
    """Ablation inference with a vLLM offline engine (one process per GPU set; combine
    with ``--num-shards/--shard-index`` to spread items over machines)."""

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int = 32768, seed: int = 0, **_: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise MissingExtra("the vllm backend needs vLLM on a GPU machine: pip install 'maple-omni[vllm]'") from exc
        model = check_model(model)
        self.tokens = placeholder_tokens(model)
        self.seed = seed
        self.llm = LLM(model=model, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
                       limit_mm_per_prompt={"video": 1, "audio": 1}, enable_prefix_caching=True)

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(n, temperature, max_new_tokens, self.seed))
        outputs = self.llm.generate([build_request(p, self.tokens) for p in prompts], params, use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        outputs = self.llm.generate([build_request(p, self.tokens) for p in prompts], params, use_tqdm=False)
        result = []
        for out, opts in zip(outputs, options):
            first = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            top = {lp.decoded_token.strip(): lp.logprob for lp in first.values() if lp.decoded_token}
            result.append(option_distribution(top, len(opts)))
        return result
