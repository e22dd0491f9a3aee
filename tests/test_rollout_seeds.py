"""Rollout seeds: every (run seed, step, prompt) samples from its own stream, in both engines."""

from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maple_data.models.prompts import Prompt
from maple_rl.training.rollout import HFRollout, SamplingSpec, VLLMRollout, prompt_seeds, request_seed

INT64 = st.integers(-2**63, 2**63 - 1)


def prompt(media: bool = False) -> Prompt:
    content = ([{"type": "video"}, {"type": "audio"}] if media else []) + [{"type": "text", "text": "What colour?"}]
    return Prompt(messages=[{"role": "system", "content": [{"type": "text", "text": "S"}]},
                            {"role": "user", "content": content}],
                  frames=[np.full((28, 28, 3), 90, np.uint8)] * 2 if media else None,
                  frame_times=[0.0, 0.5] if media else None,
                  audio=np.zeros(16000, np.float32) if media else None)


def test_request_seed_is_a_63_bit_hash_distinct_over_a_grid():
    # by definition: BLAKE2b-64 of three little-endian int64, top bit dropped
    assert request_seed(0, 0, 0) == int.from_bytes(hashlib.blake2b(bytes(24), digest_size=8).digest(), "little") >> 1
    grid = [(run, step, k) for run in range(3) for step in range(40) for k in range(64)]
    seeds = [request_seed(*key) for key in grid]
    assert seeds == [request_seed(*key) for key in grid]  # deterministic
    assert len(set(seeds)) == len(grid) and all(0 <= s < 2**63 for s in seeds)
    # vLLM samples child j of a request from seed + j: the ranges [seed, seed + G) never meet
    ordered = sorted(seeds)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= 64
    # the old scheme: prompt k's seed was the step number, so every prompt shared it
    assert len({request_seed(0, 5, k) for k in range(8)}) == 8


@settings(max_examples=200, deadline=None)
@given(st.tuples(INT64, INT64, INT64), st.tuples(INT64, INT64, INT64))
def test_request_seed_differs_for_different_keys(a, b):
    assert (request_seed(*a) == request_seed(*b)) == (a == b)


def test_prompt_seeds_from_an_int_or_one_seed_per_prompt():
    assert prompt_seeds(7, 3) == [request_seed(7, 0, 0), request_seed(7, 0, 1), request_seed(7, 0, 2)]
    assert prompt_seeds([5, 9], 2) == [5, 9]
    with pytest.raises(ValueError, match="seed must be an int or one seed per prompt"):
        prompt_seeds([1, 2, 3], 2)


# ---------------------------------------------------------------- hf: a tiny Qwen2.5-Omni Thinker


@pytest.fixture(scope="module")
def hf_engine(tmp_path_factory):
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.tiny_omni import build_tiny_omni
    from maple_rl.training.policy import load_policy

    path = str(build_tiny_omni(tmp_path_factory.mktemp("tiny-omni"), ["What colour is the shape?"]))
    model, forward_args = load_policy(path, torch.float32)
    encoder = OmniEncoder(path)
    tokens = encoder.tokenizer.convert_tokens_to_ids
    spec = SamplingSpec(temperature=1.0, max_new_tokens=8, eos_id=tokens("<|im_end|>"),
                        pad_id=tokens("<|endoftext|>"), suppressed=tuple(encoder.media_token_ids()))
    return HFRollout(encoder.encode, lambda: model, spec, forward_args)


def test_hf_identical_prompts_get_different_samples_and_a_repeat_gets_the_same(hf_engine):
    G = 4
    same, media = prompt(), prompt(media=True)
    seeds = [request_seed(0, 3, k) for k in range(3)]
    rng = torch.get_rng_state()
    first = hf_engine.generate([same, prompt(), media], G, seeds).responses
    assert torch.equal(torch.get_rng_state(), rng)  # the trainer's global generator is untouched
    assert first.shape[0] == 3 * G and first.shape[1] >= 1
    assert not torch.equal(first[:G], first[G:2 * G])  # two identical prompts: different streams
    assert len({tuple(row.tolist()) for row in first[:G]}) > 1  # and different samples within a group
    assert torch.equal(hf_engine.generate([same, prompt(), media], G, seeds).responses, first)
    assert not torch.isin(first, torch.tensor(hf_engine.spec.suppressed)).any()
    # a prompt's samples depend on its seed only, not on its neighbours in the batch
    alone = hf_engine.generate([prompt()], G, seeds[1:2]).responses
    assert torch.equal(alone, first[G:2 * G, :alone.shape[1]])
    assert not torch.equal(hf_engine.generate([same, prompt(), media], G,
                                              [request_seed(0, 4, k) for k in range(3)]).responses, first)
    # temperature 0: greedy, every sample of a prompt the same
    greedy = HFRollout(hf_engine.encode, hf_engine.policy, replace(hf_engine.spec, temperature=0.0),
                       hf_engine.forward_args).generate([same], G, seeds[:1])
    assert greedy.logprobs is None and all(torch.equal(row, greedy.responses[0]) for row in greedy.responses)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_hf_engine_log_probs_equal_the_trainers_at_the_sampling_temperature(hf_engine, temperature):
    from maple_rl.algorithms.logprobs import token_logprobs
    from maple_rl.training.inputs import response_mask

    spec = replace(hf_engine.spec, temperature=temperature)
    engine = HFRollout(hf_engine.encode, hf_engine.policy, spec, hf_engine.forward_args)
    prompts = [prompt(), prompt(media=True)]
    out = engine.generate(prompts, 3, [request_seed(1, 0, k) for k in range(2)])
    assert out.logprobs.shape == out.responses.shape and out.logprobs.dtype == torch.float32
    repeated = [p for p in prompts for _ in range(3)]
    with torch.no_grad():
        trainer_logp = token_logprobs(engine.policy(), engine.encode(repeated), out.responses,
                                      suppressed=spec.suppressed, temperature=temperature, **engine.forward_args).logp
    mask = response_mask(out.responses, spec.eos_id, spec.pad_id).bool()
    assert mask.sum() >= 6 and (out.logprobs[~mask & (out.responses == spec.pad_id)] == 0).all()
    assert torch.allclose(out.logprobs[mask], trainer_logp[mask], atol=1e-4)
    at_one = token_logprobs(engine.policy(), engine.encode(repeated), out.responses, suppressed=spec.suppressed,
                            **engine.forward_args).logp
    assert temperature == 1.0 or not torch.allclose(out.logprobs[mask], at_one[mask], atol=1e-3)


# ---------------------------------------------------------------- vllm: the FakeVLLM double


class _Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(4, 32)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head


def test_vllm_sends_one_sampling_params_per_prompt_with_its_own_seed(monkeypatch):
    from tests.doubles import FakeVLLM

    fake = FakeVLLM(lambda path: _Head())
    sent: list = []

    class Recorded(fake.module.SamplingParams):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            sent.append(self)

    monkeypatch.setattr(fake.module, "SamplingParams", Recorded)
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    G, P = 4, 3
    engine = VLLMRollout("tiny", SamplingSpec(1.0, 6, eos_id=2, pad_id=0), gpu_memory_utilization=0.1,
                         max_model_len=64, rank=0, world_size=1, local_rank=0)
    for step in range(2):
        out = engine.generate([prompt()] * P, G, [request_seed(0, step, k) for k in range(P)])
        assert out.responses.shape[0] == P * G and out.logprobs.shape == out.responses.shape
    assert [p.seed for p in sent] == [request_seed(0, step, k) for step in range(2) for k in range(P)]
    assert len({p.seed for p in sent}) == 2 * P and all(p.n == G for p in sent)
    # the trainer's single per-step int still gives each prompt its own seed
    sent.clear()
    engine.generate([prompt()] * P, G, 11)
    assert [p.seed for p in sent] == prompt_seeds(11, P) and len(set(prompt_seeds(11, P))) == P
