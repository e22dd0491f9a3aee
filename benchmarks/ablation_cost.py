"""Model calls of adaptive vs exhaustive ablation search, and how often they agree.

Simulated items (default 10k) with true tags drawn uniformly over the 7 RMTs (the
synthetic benchmark's mix). Per (item, subset) a true accuracy: a subset holding the
item's tag answers with p ~ U(0.8, 1.0), any other subset near chance, p ~ U(0.1, 0.5).
Each (item, subset) has one fixed stream of K Bernoulli(p) samples that both searches
read (adaptive reads a prefix), so they are compared on identical model behaviour.
Both run maple's own `run_search` and `propose`. Target: adaptive uses <= 50% of the
calls of exhaustive with >= 99% identical proposals.
Run: python benchmarks/ablation_cost.py [--items 10000 --samples 8 --chunk 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from maple_data.ablation import AblationSettings, run_search
from maple_data.proposal import propose
from maple_data.rmt import TAGS, is_subset


def simulate(items: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True tags ``(items,)`` (indices into TAGS) and sample streams ``(items, 7, samples)``."""
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, len(TAGS), items)
    holds = np.array([[is_subset(TAGS[t], s) for s in TAGS] for t in range(len(TAGS))])[tags]
    p = np.where(holds, rng.uniform(0.8, 1.0, holds.shape), rng.uniform(0.1, 0.5, holds.shape))
    return tags, (rng.random((items, len(TAGS), samples)) < p[..., None]).astype(float)


def run(mode: str, streams: np.ndarray, samples: int, chunk: int) -> tuple[list[str | None], int]:
    settings = AblationSettings(model="simulated", samples=samples, search=mode, chunk=chunk)
    proposals, calls = [], 0
    for stream in streams:
        taken = dict.fromkeys(TAGS, 0)

        def sample(subsets: list[str], n: int, stream=stream, taken=taken) -> list[list[tuple[float, str]]]:
            out = []
            for s in subsets:
                start = taken[s]
                taken[s] += n
                out.append([(float(x), "") for x in stream[TAGS.index(s), start:start + n]])
            return out

        results, drawn = run_search("VAS", settings, sample)
        calls += drawn
        proposals.append(propose(results, "VAS", settings.proposal).rmt)
    return proposals, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=8, help="K samples per subset")
    parser.add_argument("--chunk", type=int, default=1, help="adaptive: samples per round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tags, streams = simulate(args.items, args.samples, args.seed)
    out = {}
    for mode in ("exhaustive", "adaptive"):
        start = time.perf_counter()
        out[mode] = run(mode, streams, args.samples, args.chunk)
        print(f"{mode:<11} model calls {out[mode][1]:>9,d}   ({time.perf_counter() - start:.1f} s)")
    (ex, ex_calls), (ad, ad_calls) = out["exhaustive"], out["adaptive"]
    same = np.mean([a == b for a, b in zip(ex, ad)])
    truth = [TAGS[t] for t in tags]
    print(f"adaptive / exhaustive calls = {ad_calls / ex_calls:.4f} (target <= 0.50)")
    print(f"identical proposals = {same:.4%} (target >= 99%)")
    print(f"agreement with the true tag: exhaustive {np.mean([a == b for a, b in zip(ex, truth)]):.2%}, "
          f"adaptive {np.mean([a == b for a, b in zip(ad, truth)]):.2%}")


if __name__ == "__main__":
    main()
