"""How often the bias suite fails a token that treats one group differently (issue 19, item 5).

For each share ``d`` and kind of uneven treatment (``decision``: one group's yes/no outcome
is the opposite of the others'; ``refusal``: one group is refused), the bench builds a
candidate from a base model's outputs on the shipped probes: every answer reworded
(a sign-off appended), decisions changed for a random group on ``--noise`` of the probes
in either direction (an even-handed token's inconsistency), and one group of one
attribute treated differently on a share ``d`` of the probes where it was treated like
the others. The suite is the shipped one under the default policy, judged against the
base only (no active version), with the hashing embedder (the embedding spread is not
decisive by default). Each row is ``--reps`` candidates, attribute and group drawn per
repetition; "fails, right attribute" counts failures whose failing metrics are all
about the altered attribute.

The base outputs are SmolLM2's when ``--base-outputs`` names a JSON list of the bias
suite's base outputs (the gate's base cache writes one: ``{"outputs": [...]}``), else a
synthetic base that says yes to 75 % of the decisions, no to 20 % and is uneven on 5 %.
The report's minimum detectable gaps (median over the repetitions) are printed beside.

    python -m bench.bench_bias_power [--reps 12] [--base-outputs state/bench/gate_cache/base-<key>.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

from evaluators.embeddings import hashing_embedder
from evaluators.suites.bias import BiasSuite
from governance.policy import load_default_policy
from tests.evaluators.synthetic import even_handed_candidate, noisy_bias_base, uneven_candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--noise", type=float, default=0.04)
    parser.add_argument("--shares", default="0,0.1,0.15,0.2,0.25,0.3")
    parser.add_argument("--base-outputs", help="JSON: the bias suite's base outputs (a list, or the gate cache's file)")
    args = parser.parse_args()
    policy = load_default_policy()[0]
    suite = BiasSuite(embedder=hashing_embedder)
    cases = suite.load_cases()
    if args.base_outputs:
        data = json.loads(Path(args.base_outputs).read_text(encoding="utf-8"))
        base = list(data["outputs"] if isinstance(data, dict) else data)
        if len(base) != len(cases):
            raise SystemExit(f"{args.base_outputs}: {len(base)} outputs for {len(cases)} bias cases")
        source = f"SmolLM2 base outputs ({args.base_outputs})"
    else:
        base, source = noisy_bias_base(cases), "synthetic base (yes 75 %, no 20 %, uneven 5 %)"
    groups: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        if c.meta["group"] not in groups[c.meta["attribute"]]:
            groups[c.meta["attribute"]].append(c.meta["group"])
    attributes = sorted(groups)
    print(f"bias suite: {len(cases)} cases; {source}; noise {args.noise}; {args.reps} candidates per row")
    print(f"{'how':9s} {'share':>6s} {'fails':>6s} {'right attr':>11s} {'min. detectable gap (median)':>29s} {'s':>6s}")
    for how in ("decision", "refusal"):
        for share in (float(s) for s in args.shares.split(",")):
            t = time.perf_counter()
            fails = right = 0
            mdes: list[float] = []
            for rep in range(args.reps):
                rng = random.Random(f"{how}:{share}:{rep}")
                attribute = attributes[rep % len(attributes)]
                group = rng.choice(groups[attribute])
                cand = uneven_candidate(cases, even_handed_candidate(cases, base, seed=rep, noise=args.noise),
                                        attribute=attribute, group=group, share=share, how=how, seed=rep)
                result = suite.evaluate(cases, cand, {"base": base}, policy)
                failing = [m.name for m in result.failing_metrics()]
                fails += bool(failing)
                right += bool(failing) and all(n.startswith(attribute) for n in failing)
                gap = next(m for m in result.metrics if m.name == f"{attribute} minimum detectable {how} gap")
                if gap.value is not None:
                    mdes.append(gap.value)
            mde = f"{statistics.median(mdes):.3f}" if mdes else "none"
            print(f"{how:9s} {share:6.2f} {fails:3d}/{args.reps:<2d} {right:8d}/{args.reps:<2d} {mde:>29s} "
                  f"{time.perf_counter() - t:6.1f}", flush=True)


if __name__ == "__main__":
    main()
