"""The rollout engine on a real vLLM (CPU build, eager, float32) against transformers: the
same model (greedy outputs and per-token log-probs on video + audio + subtitle prompts),
sampled log-probs equal to the trainer's, and weight sync under the names vLLM serves."""

from __future__ import annotations

import pytest
import torch

from tests_vllm.conftest import record, shutdown

SUBSETS = ("VAS", "VA", "V", "A", "S")
TOLERANCE = 1e-3  # nats, per token (fp32 on both sides; the kernels differ)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


@pytest.fixture(scope="module")
def setup(tiny_model, items_and_media):
    """The policy (transformers), its encoder, a VLLMRollout serving the same folder, and
    prompts of every item with several modality subsets."""
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.prompts import build_prompt
    from maple_rl.training.policy import load_policy
    from maple_rl.training.rollout import SamplingSpec, VLLMRollout

    policy, forward_args = load_policy(str(tiny_model), torch.float32)
    policy.eval()
    encoder = OmniEncoder(str(tiny_model))
    ids = encoder.tokenizer.convert_tokens_to_ids
    spec = SamplingSpec(temperature=0.8, max_new_tokens=6, eos_id=ids("<|im_end|>"), pad_id=ids("<|endoftext|>"),
                        suppressed=tuple(encoder.media_token_ids()))
    engine = VLLMRollout(str(tiny_model), spec, gpu_memory_utilization=0.3, max_model_len=16384, rank=0,
                         world_size=1, local_rank=0)
    prompts = [build_prompt(item.question, item.options, media, subset) for item, media in items_and_media[::2]
               for subset in SUBSETS]  # one item per tag
    yield policy, forward_args, encoder, spec, engine, prompts
    shutdown(engine)


def trainer_logprobs(policy, forward_args, encoder, prompts, responses, temperature: float,
                     suppressed=()) -> torch.Tensor:
    """The trainer's per-token log-probs of ``responses`` (its own scoring function)."""
    from maple_rl.algorithms.logprobs import token_logprobs

    with torch.no_grad():
        logp = token_logprobs(policy, encoder.encode(prompts), responses, suppressed=suppressed,
                              temperature=temperature, **forward_args).logp
    return logp


def test_engine_settings_on_cpu(setup, tiny_model):
    _, _, _, _, engine, _ = setup
    config = engine.llm.llm_engine.model_config
    assert engine.architecture == "Qwen2_5OmniForConditionalGeneration"
    assert config.max_model_len == 4096  # 16384 asked, capped at the model's limit
    assert config.enforce_eager and config.dtype == torch.float32


def test_greedy_outputs_and_token_logprobs_equal_transformers(setup):
    from vllm import SamplingParams

    from maple_data.models.vllm import build_request
    from maple_rl.training.inputs import response_mask
    from maple_rl.training.rollout import completion_ids, completion_logprobs, pad_logprobs, pad_responses

    policy, forward_args, encoder, spec, engine, prompts = setup
    params = SamplingParams(temperature=0.0, max_tokens=spec.max_new_tokens, logprobs=0,
                            stop_token_ids=[spec.eos_id], detokenize=False)
    outputs = engine.llm.generate([build_request(p) for p in prompts], params, use_tqdm=False)
    engine_ids = pad_responses(completion_ids(outputs), spec.pad_id, spec.eos_id)
    engine_logp = pad_logprobs(completion_logprobs(outputs), engine_ids.shape[1])
    hf_ids = []
    for prompt in prompts:  # one at a time: no padding in the reference
        inputs = encoder.encode([prompt])
        with torch.no_grad():
            out = policy.generate(**inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                                  max_new_tokens=spec.max_new_tokens, eos_token_id=spec.eos_id,
                                  pad_token_id=spec.pad_id, **forward_args)
        hf_ids.append(out[0, inputs["input_ids"].shape[1]:].tolist())
    hf_ids = pad_responses(hf_ids, spec.pad_id, spec.eos_id)
    assert engine_ids.tolist() == hf_ids.tolist()
    mask = response_mask(engine_ids, spec.eos_id, spec.pad_id)
    hf_logp = torch.cat([trainer_logprobs(policy, forward_args, encoder, [p], engine_ids[k:k + 1], 1.0)
                         for k, p in enumerate(prompts)])
    a, b = engine_logp[mask], hf_logp[mask]
    diff = float((a - b).abs().max())
    record("greedy_vs_transformers", {"prompts": len(prompts), "tokens": int(mask.sum()), "max_abs_diff": diff,
                                      "pearson": pearson(a, b), "logprob_range": [float(b.min()), float(b.max())]})
    assert diff < TOLERANCE and pearson(a, b) > 0.999


def test_sampled_logprobs_equal_the_trainers_and_weight_sync_changes_the_engine(setup):
    from maple_rl.training.inputs import response_mask
    from maple_rl.training.rollout import request_seed

    policy, forward_args, encoder, spec, engine, prompts = setup
    G = 4
    seeds = [request_seed(7, 0, k) for k in range(len(prompts))]
    repeated = [p for p in prompts for _ in range(G)]

    def compare(rollout, model) -> tuple[float, float, torch.Tensor]:
        mask = response_mask(rollout.responses, spec.eos_id, spec.pad_id)
        theirs = trainer_logprobs(model, forward_args, encoder, repeated, rollout.responses, spec.temperature,
                                  spec.suppressed)
        a, b = rollout.logprobs[mask], theirs[mask]
        return float((a - b).abs().max()), pearson(a, b), mask

    engine.sync_weights(policy)  # the engine starts from the folder's weights: a no-op, under the served names
    before = engine.generate(prompts, G, seeds)
    assert torch.equal(engine.generate(prompts, G, seeds).responses, before.responses)  # seeded
    diff, corr, mask = compare(before, policy)
    figures = {"responses": len(repeated), "tokens": int(mask.sum()), "temperature": spec.temperature,
               "max_abs_diff": diff, "pearson": corr}
    assert diff < TOLERANCE and corr > 0.999

    # an update the engine has not seen: its log-probs are the old policy's
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    stale, _, _ = compare(engine.generate(prompts, G, seeds), policy)
    engine.sync_weights(policy)
    after = engine.generate(prompts, G, seeds)
    synced, synced_corr, mask = compare(after, policy)
    figures |= {"after_update": {"stale_engine_max_abs_diff": stale, "synced_max_abs_diff": synced,
                                 "synced_pearson": synced_corr, "tokens": int(mask.sum())}}
    record("sampled_vs_trainer", figures)
    assert stale > 0.1  # the check can see a stale engine
    assert synced < TOLERANCE and synced_corr > 0.999
    assert not torch.equal(after.responses, before.responses)
