"""Compare the claims of two reproductions (e.g. base seeds 0 and 1): the verdict of each claim
in both, its effect with interval, and whether any claim holds in one and is contradicted in the
other (which must never happen for a conclusion that survives a second seed).

    python -m experiments.compare_runs results/synthetic /tmp/seed1 [--out results/synthetic/seed_check.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from experiments.claims import Claim
from experiments.reporting import ARTEFACTS
from jaxhfc import results as R


def compare(a: Path, b: Path) -> tuple[list[dict], int]:
    """Rows ``{artefact, claim, verdict a, verdict b, effect a, effect b, flip}`` for the claims
    both roots hold, and the number of holds-vs-contradicted flips."""
    rows, flips = [], 0
    for module, _, _ in ARTEFACTS:
        pa, pb = a / module / "table.json", b / module / "table.json"
        if not (pa.exists() and pb.exists()):
            continue
        ca = {c["claim"]: Claim.from_dict(c) for c in R.read_json(pa)["claims"] if "judgement" in c}
        cb = {c["claim"]: Claim.from_dict(c) for c in R.read_json(pb)["claims"] if "judgement" in c}
        for text in ca:
            if text not in cb:
                continue
            x, y = ca[text], cb[text]
            flip = {x.mark(), y.mark()} == {"holds", "contradicted"}
            flips += flip
            rows.append({"artefact": module, "claim": text, "verdict a": x.mark(), "verdict b": y.mark(),
                         "effect a": x.effect_text(), "effect b": y.effect_text(), "flip": "FLIP" if flip else ""})
    return rows, flips


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write the comparison as markdown here")
    args = p.parse_args(argv)
    rows, flips = compare(args.a, args.b)
    same = sum(r["verdict a"] == r["verdict b"] for r in rows)
    ra, rb = (R.read_json(x / "table1" / "config.json") if (x / "table1" / "config.json").exists() else {}
              for x in (args.a, args.b))
    head = (f"# Claims of two reproductions\n\na: `{args.a}` (seeds {ra.get('seeds')}), b: `{args.b}` (seeds "
            f"{rb.get('seeds')}). {len(rows)} claims, {same} with the same verdict, {flips} that hold in one and are "
            "contradicted in the other.\n\n")
    text = head + R.markdown_table(rows, ["artefact", "claim", "verdict a", "verdict b", "effect a", "effect b", "flip"])
    print(text)
    if args.out:
        R.write_text(args.out, text)
    return 1 if flips else 0


if __name__ == "__main__":
    sys.exit(main())
