"""Test doubles implementing maple's protocols (used in tests only)."""

from __future__ import annotations

import json
import math
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maple_data.annotate.ablation import Item
from maple_data.models.prompts import Prompt
from maple_data.rmt import is_subset


class TableBackend:
    """Test double: answers each (item, subset) correctly when the subset holds the item's
    true tag, otherwise with a uniformly random option letter (chance); caption items get
    the reference caption or "I cannot tell."."""

    def __init__(self, items: dict[str, Item], truth: dict[str, str], seed: int = 0) -> None:
        self.items, self.truth, self.rng = items, truth, np.random.default_rng(seed)
        self.calls = 0

    def accuracy(self, item_id: str, subset: str) -> float:
        return 1.0 if is_subset(self.truth[item_id], subset) else 0.0

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float, max_new_tokens: int):
        out = []
        for prompt in prompts:
            item = self.items[prompt.meta["item"]]
            p = self.accuracy(item.id, prompt.meta["subset"])
            if item.task == "caption":
                out.append([item.answer if self.rng.random() < p else "I cannot tell." for _ in range(n)])
            else:
                correct = "ABCD"[item.options.index(item.answer)]
                out.append([f"Answer: {correct}" if self.rng.random() < p else
                            "ABCD"[self.rng.integers(len(item.options))] for _ in range(n)])
            self.calls += n
        return out

    def option_probs(self, prompts, options):
        raise NotImplementedError


def annotated_synthetic(root: Path, n: int, seed: int) -> tuple[Path, dict[str, Item], list[dict]]:
    """A synthetic corpus of ``n`` videos under ``root``, extracted and annotated with the
    table backend (``root/work``). Returns (work folder, items by id, proposals)."""
    from maple_data.annotate.ablation import AblationSettings, run_annotate, run_propose
    from maple_data.inputs.qa import read_qa_file
    from maple_data.inputs.synth import SynthConfig, generate
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec

    corpus = generate(root / "corpus", SynthConfig(n=n, seed=seed))
    work = root / "work"
    run_extract(corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=4)))
    qa = read_qa_file(corpus / "videos" / "qa.jsonl", corpus / "videos")
    items = {q.id: Item.from_qa(q) for q in qa.items}
    truth = {json.loads(x)["id"]: json.loads(x)["rmt"] for x in (corpus / "ground_truth.jsonl").read_text().splitlines()}
    run_annotate(items.values(), work, TableBackend(items, truth), AblationSettings(model="table", samples=16))
    run_propose(work)
    return work, items, [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]


class FakeVLLM:
    """Test double of the ``vllm`` module for the colocated rollout engine: ``LLM`` keeps a
    real copy of the checkpoint's model in a worker built the way vLLM builds one (the
    ``worker_extension_cls`` mixed into the worker class), answers ``collective_rpc`` by
    calling the named method on that worker, and samples ``n`` completions per request
    (ids only, ending at a stop id when one is drawn), completion ``j`` from a generator
    seeded with the request's ``seed + j`` as vLLM does (uniformly over the allowed ids, whose
    log-prob it reports when ``params.logprobs`` is set); ``params`` is one ``SamplingParams``
    for every request or a list with one per request. It checks the request format and
    records every call for the test to inspect."""

    def __init__(self, load_model) -> None:
        self.load_model = load_model  # path -> torch module (the checkpoint's model)
        self.engines: list = []
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs) -> None:
                self.__dict__.update(kwargs)

        class LLM:
            def __init__(self, model: str, **kwargs) -> None:
                import importlib

                module, _, name = kwargs["worker_extension_cls"].rpartition(".")
                extension = getattr(importlib.import_module(module), name)
                worker_cls = type("Worker", (extension,), {})
                self.worker = worker_cls()
                self.worker.model_runner = type("ModelRunner", (), {})()
                self.worker.model_runner.model = _LoadableModel(fake.load_model(model), model)
                self.kwargs, self.calls = kwargs, []
                fake.engines.append(self)

            def collective_rpc(self, method: str, args=()):
                self.calls.append(("collective_rpc", method))
                return [getattr(self.worker, method)(*args)]

            def reset_prefix_cache(self) -> None:
                self.calls.append(("reset_prefix_cache", None))

            def generate(self, requests, params, use_tqdm=True):
                import torch

                self.calls.append(("generate", len(requests)))
                vocab = self.worker.model_runner.model.vocab_size
                per_request = params if isinstance(params, list) else [params] * len(requests)
                assert len(per_request) == len(requests)
                outputs = []
                for request, params in zip(requests, per_request):
                    assert isinstance(request["prompt"], str) and request["prompt"].endswith("<|im_start|>assistant\n")
                    completions = []
                    for j in range(params.n):
                        generator = torch.Generator().manual_seed(params.seed + j)
                        length = int(torch.randint(0, params.max_tokens + 1, (1,), generator=generator))
                        banned = [t for t, bias in (params.logit_bias or {}).items() if bias <= -100]
                        allowed = torch.tensor([t for t in range(vocab) if t not in banned])
                        ids = allowed[torch.randint(0, len(allowed), (length,), generator=generator)].tolist()
                        if length and float(torch.rand(1, generator=generator)) < 0.5:
                            ids[-1] = params.stop_token_ids[0]
                        logprob = type("Logprob", (), {"logprob": -math.log(len(allowed))})()
                        logprobs = None if getattr(params, "logprobs", None) is None else [{t: logprob} for t in ids]
                        completions.append(type("Completion", (), {"token_ids": ids, "logprobs": logprobs})())
                    outputs.append(type("RequestOutput", (), {"outputs": completions})())
                return outputs

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams


class _LoadableModel:
    """The ``load_weights(weights=[(name, tensor)])`` interface of a vLLM model, over a
    torch module, under the names vLLM serves: those of the served folder's weights file
    (``thinker.*`` in a full Qwen2.5-Omni folder), each mapped to the module's tensor by
    transformers' own save-time renaming; unknown names are errors (as in vLLM)."""

    def __init__(self, module, folder: str) -> None:
        from safetensors import safe_open
        from transformers.core_model_loading import revert_weight_conversion

        self.module = module
        self.vocab_size = module.get_output_embeddings().weight.shape[0]
        self.tensors = dict(module.state_dict())  # a bare module (no folder): its own names
        weights = Path(folder) / "model.safetensors"
        if weights.exists():
            with safe_open(str(weights), "pt") as handle:
                in_file = set(handle.keys())
            prefix = "thinker." if all(n.startswith("thinker.") for n in in_file) else ""
            saved = revert_weight_conversion(module, dict(module.state_dict()))  # same tensors, saved names
            self.tensors = {prefix + name.removeprefix(prefix): tensor for name, tensor in saved.items()}
            assert in_file <= set(self.tensors), sorted(in_file - set(self.tensors))[:3]

    def load_weights(self, weights) -> None:
        for name, tensor in weights:
            if name not in self.tensors:
                raise KeyError(f"There is no module or parameter named {name!r} in the served model")
            self.tensors[name].copy_(tensor)
