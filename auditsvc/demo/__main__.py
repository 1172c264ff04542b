"""python -m auditsvc.demo --out DIR [--seed N]: build the tank demo (cached) and audit both models.

Writes DIR/{shortcut,clean,probe} (the demo) and DIR/reports/{shortcut,clean}/ (report.html,
report.pdf, findings.json), and prints where they are.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from ..battery import AuditOptions
from ..pipeline import load_and_audit, write_outputs
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
    probe = built["paths"]["probe"]
    # The shortcut model is audited against the clean one as its reference: where do their layers diverge?
    references = {"shortcut": Path(built["paths"]["clean"]), "clean": None}
    for name in ("shortcut", "clean"):
        started = time.perf_counter()
        result = load_and_audit(Path(built["paths"][name]), Path(probe), reference=references[name],
                                options=AuditOptions(seed=args.seed))
        # Models this command built itself are trusted; uploaded ones only ever run in the sandbox.
        result.environment["isolation"] = "this process: the demo's own models, built on this machine"
        files = write_outputs(result, args.out / "reports" / name)
        print(f"\naudit of the {name} model: {result.verdict.upper()} in {time.perf_counter() - started:.0f} s")
        for finding in result.findings:
            print(f"  [{finding.severity}] {finding.title}")
        print(f"  {files.html}\n  {files.pdf}\n  {files.findings}")


if __name__ == "__main__":
    main()
