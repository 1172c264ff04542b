"""python -m auditsvc.demo --out DIR [--seed N]: build the tank demo (cached) and audit both models.

Writes DIR/{shortcut,clean,probe} (the demo) and DIR/reports/{shortcut,clean}/ (report.html,
report.pdf, findings.json), and prints where they are.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .audits import audit_in_parallel
from .build import build_demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m auditsvc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the demo and its reports")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-only", action="store_true", help="build the models and probe set, audit nothing")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    built = build_demo(args.out, seed=args.seed)
    print("tank demo" + (" (cached)" if built["cached"] else f" built in {built['build_seconds']:.0f} s"))
    for name, accuracy in built["accuracy"].items():
        print(f"  {name:9} on held-out scenes: weather-aligned {accuracy['aligned']:.1%}, "
              f"weather-flipped {accuracy['flipped']:.1%}")
    if args.build_only:
        return
    probe = Path(built["paths"]["probe"])
    # The shortcut model is audited against the clean one as its reference: where do their layers diverge?
    jobs = {"shortcut": (Path(built["paths"]["shortcut"]), Path(built["paths"]["clean"])),
            "clean": (Path(built["paths"]["clean"]), None)}
    for outcome in audit_in_parallel(jobs, probe, args.out / "reports", args.seed):
        print(f"\naudit of the {outcome['name']} model: {outcome['verdict'].upper()} in {outcome['seconds']:.0f} s")
        for severity, title in outcome["findings"]:
            print(f"  [{severity}] {title}")
        print("\n".join(f"  {path}" for path in outcome["files"]))


if __name__ == "__main__":
    main()
