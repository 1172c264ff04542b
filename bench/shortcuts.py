"""Benchmark: does the shortcut detector find planted shortcuts, name the right cue, and stay quiet otherwise?

For every task family x cue x architecture x seed (a "case") it trains, on a synthetic task of
auditsvc/demo/cues.py (circle or square, "shapes"; ring or cross with textured fills on textured
backgrounds, "glyphs"):
- a shortcut model: the cue on every square and no circle (alignment 1.0);
- a partial-shortcut model: alignment 0.85;
- a clean control: cue and class independent (alignment 0.5);
and measures each model's reliance on the cue on a hidden decorrelated split (the ground truth:
it relies when accuracy on cue-aligned and cue-flipped images differs by 20 points or more).
Then it audits the models through the command line (the shortcut sections of the battery,
AUDITSVC_SECTIONS) on probe sets without a manifest (the cue must be discovered, not named):
decorrelated (0.5), biased (1.0) and partial (0.85), and scores the findings: detection among
relying models, false alarms among the others, the named cue and, for cues planted in one
place (the background's texture or colour, the object's colour), the place the finding names.
On a decorrelated probe set no nuisance goes with the label by construction, so any "biased
probe set" finding there is a false alarm; in the glyph family the classes differ only in the
object's outline, so every property that predicts the label there is the object's own.

Models, probe sets and audits are cached in --out; a re-run redoes only what is missing.
After a change of the detector, --reaudit re-runs every audit and keeps the models;
--report-only scores the audits finished so far.

    .venv/bin/python bench/shortcuts.py [--quick] [--families shapes glyphs] [--cues corner blur ...]
        [--archs plain ...] [--seeds 0 1] [--jobs 2] [--out build/bench_shortcuts] [--reaudit] [--report-only]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from auditsvc.demo import cues  # noqa: E402

BENCH_VERSION = "2"          # bump when a change would give different models or probe sets
MEAN, STD = 0.45, 0.25
TRAIN_IMAGES = 2000
EPOCHS = 12
LEARNING_RATE = 3e-3
BATCH_SIZE = 64
PROBE_IMAGES = 200
AUDIT_TIMEOUT = 3600
# The sections the verdict on shortcuts is made of; the rest of the battery does not change it.
AUDIT_SECTIONS = "summary,performance,shortcuts,looking"

MODEL_ALIGNMENT = {"shortcut": 1.0, "partial": 0.85, "clean": 0.5}
PROBE_ALIGNMENT = {"decorrelated": 0.5, "biased": 1.0, "partial": 0.85}
AUDITS = [("shortcut", "decorrelated"), ("shortcut", "biased"), ("clean", "decorrelated"), ("clean", "biased"),
          ("partial", "partial"), ("partial", "decorrelated")]
# The detector's cue families that count as naming the planted cue. "detail" is the detector's
# name for sharpness and noise together, when its probes cannot tell them apart.
ACCEPTED_CUES = {"brightness": {"brightness"}, "colour": {"colour", "saturation"}, "corner": {"corner"},
                 "border": {"border"}, "blur": {"sharpness", "detail"}, "noise": {"noise", "detail"},
                 "jpeg": {"compression"}, "background_texture": {"sharpness", "noise", "detail", "texture"},
                 "background_colour": {"colour", "saturation"}, "object_colour": {"colour", "saturation"}}
ARCHS = ("plain", "resnet", "separable")
QUICK = {"families": ["shapes"], "cues": ["corner", "blur"], "archs": ["plain"], "seeds": [0]}


def build_net(arch: str):
    from torch import nn

    from auditsvc.demo.nets import PlainNet, SeparableNet, tiny_resnet

    classes = 2
    if arch == "plain":
        return PlainNet(classes, widths=(8, 16, 32))
    if arch == "resnet":
        return tiny_resnet(classes)
    if arch == "separable":
        return SeparableNet(classes, widths=(16, 32, 64), activation=nn.Hardswish)
    raise ValueError(arch)


@dataclass(frozen=True)
class Case:
    family: str
    cue: str
    arch: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.family}-{self.cue}-{self.arch}-s{self.seed}"


class Layout:
    """Where everything lives in --out."""

    def __init__(self, root: Path):
        self.root = root

    def model(self, case: Case, kind: str) -> Path:
        return self.root / "models" / case.id / kind

    def probe(self, case: Case, kind: str) -> Path:
        return self.root / "probes" / f"{case.family}-{case.cue}-s{case.seed}" / kind

    def audit(self, case: Case, model_kind: str, probe_kind: str) -> Path:
        return self.root / "audits" / case.id / f"{model_kind}-on-{probe_kind}"


def fingerprint() -> str:
    """Models and probe sets depend on the cue code, the nets and the training settings."""
    source = b"".join((REPO / "auditsvc" / "demo" / name).read_bytes() for name in ("cues.py", "nets.py"))
    settings = json.dumps([BENCH_VERSION, MEAN, STD, TRAIN_IMAGES, EPOCHS, LEARNING_RATE, BATCH_SIZE, PROBE_IMAGES])
    return hashlib.sha256(source + settings.encode()).hexdigest()[:16]


def detector_fingerprint() -> str:
    """The detector's code; audits made with other code are reported as stale."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "auditsvc" / "battery").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- probe sets ----------------------------------------------------------------------------------

def write_probe(root: Path, case: Case, kind: str, stamp: str) -> None:
    """ImageFolder layout circle/0001.png, square/0001.png; no manifest: the cue goes unnamed."""
    family, cue, seed = case.family, case.cue, case.seed
    if (read_json(root / "probe_info.json") or {}).get("fingerprint") == stamp:
        return
    if root.exists():
        shutil.rmtree(root)  # a probe set of other code or settings must not leave images behind
    images, labels, present = cues.make_split(cues.split_rng(seed, "probe", family, cue, kind), PROBE_IMAGES, cue,
                                              PROBE_ALIGNMENT[kind], family=family)
    classes = cues.FAMILIES[family].classes
    counters = dict.fromkeys(classes, 0)
    for image, label in zip(images, labels):
        name = classes[label]
        counters[name] += 1
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name / f"{counters[name]:04d}.png")
    info = {"fingerprint": stamp, "family": family, "cue": cue, "seed": seed, "alignment": PROBE_ALIGNMENT[kind],
            "images": len(labels), "cue_present": int(present.sum())}
    (root / "probe_info.json").write_text(json.dumps(info, indent=2) + "\n")


# --- models --------------------------------------------------------------------------------------

def model_is_fresh(directory: Path, stamp: str) -> bool:
    info = read_json(directory / "info.json")
    return bool(info) and info.get("fingerprint") == stamp and (directory / "model.pt2").exists()


def train_one(case: Case, kind: str, directory: str, stamp: str) -> dict:
    """Runs in a worker process: train, export, package, measure the reliance ground truth."""
    import torch

    from auditsvc.demo import training
    from auditsvc.demo.nets import export

    torch.set_num_threads(1)  # --jobs trainings share the cores
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    images, labels, _ = cues.make_split(cues.split_rng(case.seed, "train", case.family, case.cue, kind), TRAIN_IMAGES,
                                        case.cue, MODEL_ALIGNMENT[kind], family=case.family)
    torch.manual_seed(case.seed)
    model = training.train(build_net(case.arch), images, labels, mean=MEAN, std=STD, epochs=EPOCHS,
                           lr=LEARNING_RATE, batch_size=BATCH_SIZE, seed=case.seed)
    program = export(model, (3, cues.SIZE, cues.SIZE))
    training.write_model(Path(directory), program, training.model_meta(
        f"{case.id}-{kind}", cues.FAMILIES[case.family].classes, (3, cues.SIZE, cues.SIZE), MEAN, STD))
    truth = cues.reliance(program, case.cue, MEAN, STD, seed=case.seed, family=case.family)
    info = {"fingerprint": stamp, "case": case.id, "kind": kind, "alignment": MODEL_ALIGNMENT[kind],
            "reliance": truth, "train_seconds": round(time.perf_counter() - started, 1)}
    (Path(directory) / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def train_missing(jobs: list[tuple[Case, str]], layout: Layout, stamp: str, workers: int,
                  log: Callable[[str], None]) -> None:
    if not jobs:
        return
    log(f"training {len(jobs)} models with {workers} workers")
    context = get_context("spawn")  # no fork after torch has started threads
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(train_one, case, kind, str(layout.model(case, kind)), stamp): (case, kind)
                   for case, kind in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            case, kind = futures[future]
            info = future.result()
            truth = info["reliance"]
            log(f"  [{done}/{len(jobs)}] {case.id} {kind:8} gap {truth['gap']:+.2f} (aligned {truth['aligned']:.0%}, "
                f"flipped {truth['flipped']:.0%}) in {info['train_seconds']:.0f} s")


# --- audits --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditJob:
    case: Case
    model_kind: str
    probe_kind: str
    model: Path
    probe: Path
    out: Path


def audit_is_fresh(job: AuditJob) -> bool:
    record = read_json(job.out / "audit.json")
    return bool(record) and record.get("returncode") == 0 and (job.out / "findings.json").exists() and \
        audited_these_inputs(job, record)


def audited_these_inputs(job: AuditJob, record: dict) -> bool:
    """Was the audit made of the model and probe set now in place (not of an earlier version)?"""
    return (record.get("model_sha256") == file_sha256(job.model / "model.pt2")
            and record.get("probe") == (read_json(job.probe / "probe_info.json") or {}).get("fingerprint"))


def run_audit(job: AuditJob, detector: str) -> dict:
    """The real command line, one thread per audit so that --jobs audits share the cores."""
    command = [sys.executable, "manage.py", "audit", "--model", str(job.model / "model.pt2"),
               "--dataset", str(job.probe), "--out", str(job.out), "--seed", str(job.case.seed), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "AUDITSVC_SECTIONS": AUDIT_SECTIONS}
    (job.out / "findings.json").unlink(missing_ok=True)
    job.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=AUDIT_TIMEOUT)
        returncode, error = done.returncode, done.stderr.strip().splitlines()[-1:] if done.returncode else []
    except subprocess.TimeoutExpired:
        returncode, error = -1, [f"timed out after {AUDIT_TIMEOUT} s"]
    record = {"returncode": returncode, "error": error[0] if error else None,
              "seconds": round(time.perf_counter() - started, 1), "command": command,
              "model_sha256": file_sha256(job.model / "model.pt2"),
              "probe": (read_json(job.probe / "probe_info.json") or {}).get("fingerprint"), "detector": detector}
    (job.out / "audit.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def audit_missing(jobs: list[AuditJob], workers: int, detector: str, log: Callable[[str], None]) -> None:
    if not jobs:
        return
    log(f"running {len(jobs)} audits, {workers} at a time")
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run_audit, job, detector): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            job, record = futures[future], future.result()
            outcome = "ok" if record["returncode"] == 0 else f"FAILED ({record['error']})"
            log(f"  [{done}/{len(jobs)}] {job.case.id} {job.model_kind} on {job.probe_kind}: {outcome} "
                f"in {record['seconds']:.0f} s")


# --- scoring -------------------------------------------------------------------------------------

def score(job: AuditJob) -> dict:
    """One row: the ground truth of the model and what the audit found."""
    truth = read_json(job.model / "info.json")["reliance"]
    record = read_json(job.out / "audit.json") or {}
    row = {"case": job.case.id, "family": job.case.family, "cue": job.case.cue, "arch": job.case.arch,
           "seed": job.case.seed,
           "model": job.model_kind, "probe": job.probe_kind, "gap": truth["gap"], "aligned": truth["aligned"],
           "flipped": truth["flipped"], "model_accuracy": truth["accuracy"], "relies": truth["relies"],
           "audit_ok": record.get("returncode") == 0, "audit_seconds": record.get("seconds"),
           "audit_error": record.get("error"), "detector": record.get("detector")}
    findings = read_json(job.out / "findings.json") if row["audit_ok"] else None
    if findings is None:
        return row | {"audit_ok": False}
    shortcut = [f for f in findings["findings"] if f["category"] == "shortcut" and f["severity"] in ("warn", "fail")]
    bias = [f for f in findings["findings"] if f["category"] == "bias"]
    accepted = ACCEPTED_CUES[job.case.cue]
    top_cue = shortcut[0]["evidence"].get("cue") if shortcut else None
    top_place = shortcut[0]["evidence"].get("place") if shortcut else None
    planted_place = cues.CUES[job.case.cue].place
    bias_cue = bias[0]["evidence"].get("cue") if bias else None
    return row | {
        "verdict": findings["verdict"], "probe_accuracy": findings["metrics"].get("accuracy"),
        "detected": bool(shortcut), "severity": shortcut[0]["severity"] if shortcut else None,
        "top_cue": top_cue, "right_cue": top_cue in accepted if shortcut else None,
        "title": shortcut[0]["title"] if shortcut else None, "place": top_place,
        "right_place": top_place == planted_place if shortcut and planted_place else None,
        "right_cue_and_place": (top_cue in accepted and (not planted_place or top_place == planted_place))
        if shortcut else None,
        "top_also": (shortcut[0]["evidence"].get("also") or []) if shortcut else [],
        "bias_finding": bool(bias), "bias_cue": bias_cue, "bias_right_cue": bias_cue in accepted if bias else None,
        "codes": [f["code"] for f in findings["findings"]]}


def rates(rows: list[dict]) -> dict:
    rows = [r for r in rows if r["audit_ok"]]
    relying = [r for r in rows if r["relies"]]
    others = [r for r in rows if not r["relies"]]
    detected = [r for r in rows if r["detected"]]
    on_biased = [r for r in others if r["probe"] != "decorrelated"]
    # On a decorrelated probe set no nuisance goes with the label by construction: any bias finding is false.
    nuisance_free = [r for r in rows if r["probe"] == "decorrelated"]
    placed = [r for r in detected if r["right_place"] is not None]
    return {"audits": len(rows), "rely": len(relying),
            "detection": _share(relying, "detected"), "false_alarm": _share(others, "detected"),
            "right_cue": _share(detected, "right_cue_and_place"), "right_place": _share(placed, "right_place"),
            "bias_finding": _share(on_biased, "bias_finding"),
            "bias_false_alarm": _share(nuisance_free, "bias_finding")}


def _share(rows: list[dict], key: str) -> tuple[int, int]:
    return sum(bool(r[key]) for r in rows), len(rows)


def format_share(share: tuple[int, int]) -> str:
    hits, total = share
    return f"{hits / total:6.0%} ({hits:>3}/{total:<3})" if total else f"{'-':>6} {'':9}"


def print_table(title: str, groups: Iterable[tuple[str, list[dict]]]) -> None:
    print(f"\n{title}")
    header = (f"{'':18} {'audits':>6} {'rely':>5}  {'detection (rely)':>17}  {'false alarm (not)':>17}  "
              f"{'right cue+place':>17}  {'place (placed)':>17}  {'bias finding':>17}  {'bias false alarm':>17}")
    print(header)
    print("-" * len(header))
    for name, rows in groups:
        r = rates(rows)
        print(f"{name:18} {r['audits']:>6} {r['rely']:>5}  {format_share(r['detection']):>17}  "
              f"{format_share(r['false_alarm']):>17}  {format_share(r['right_cue']):>17}  "
              f"{format_share(r['right_place']):>17}  "
              f"{format_share(r['bias_finding']):>17}  {format_share(r['bias_false_alarm']):>17}")


def print_ground_truth(rows: list[dict]) -> None:
    print("\nground truth: reliance gap (accuracy cue-aligned - cue-flipped) per model, min / mean / max")
    models = {(r["case"], r["model"]): r for r in rows}.values()
    print(f"{'family / cue':28}" + "".join(f"{kind:>26}" for kind in MODEL_ALIGNMENT) + f"{'clean acc.':>12}")
    pairs = sorted({(r["family"], r["cue"]) for r in models},
                   key=lambda pair: (list(cues.FAMILIES).index(pair[0]), list(cues.CUES).index(pair[1])))
    for family, cue in pairs:
        cells, mine = [], [r for r in models if r["family"] == family and r["cue"] == cue]
        for kind in MODEL_ALIGNMENT:
            gaps = [r["gap"] for r in mine if r["model"] == kind]
            relying = sum(abs(g) >= cues.RELIANCE_GAP for g in gaps)
            cells.append(f"{min(gaps):+.2f} {np.mean(gaps):+.2f} {max(gaps):+.2f} ({relying}/{len(gaps)})"
                         if gaps else "-")
        clean = [r["model_accuracy"] for r in mine if r["model"] == "clean"]
        print(f"{family + ' / ' + cue:28}" + "".join(f"{c:>26}" for c in cells)
              + (f"{np.mean(clean):>12.1%}" if clean else ""))


def print_report(rows: list[dict]) -> None:
    print_ground_truth(rows)
    print_table("per probe set; rates over audits: detection among models that rely, false alarms among the others,\n"
                "right cue (and place, for cues planted in one place) among detections; place among detections of\n"
                "cues planted in one place; bias findings among models that do not rely, on biased probe sets;\n"
                "bias false alarms: bias findings on decorrelated probe sets (no nuisance goes with the label there)",
                [*((kind, [r for r in rows if r["probe"] == kind]) for kind in PROBE_ALIGNMENT), ("overall", rows)])
    print_table("per task family", [(family, [r for r in rows if r["family"] == family]) for family in cues.FAMILIES
                                    if any(r["family"] == family for r in rows)])
    print_table("per cue", [(cue, [r for r in rows if r["cue"] == cue]) for cue in cues.CUES
                            if any(r["cue"] == cue for r in rows)])
    print_table("per model kind", [(kind, [r for r in rows if r["model"] == kind]) for kind in MODEL_ALIGNMENT])
    print_table("per architecture", [(arch, [r for r in rows if r["arch"] == arch]) for arch in ARCHS
                                     if any(r["arch"] == arch for r in rows)])
    ok = [r for r in rows if r["audit_ok"]]
    misses = [r for r in ok if r["relies"] and not r["detected"]]
    alarms = [r for r in ok if not r["relies"] and r["detected"]]
    wrong = [r for r in ok if r["detected"] and not r["right_cue_and_place"]]
    for title, listed in (("misses (relies, no shortcut finding)", misses),
                          ("false alarms (shortcut finding, does not rely)", alarms),
                          ("wrong cue named", wrong)):
        print(f"\n{title}: {len(listed)}")
        for r in listed:
            also = f" (also {', '.join(r['top_also'])})" if r["top_also"] else ""
            place = f" in the {r['place']}" if r.get("place") else ""
            print(f"  {r['case']:34} {r['model']:8} on {r['probe']:12} gap {r['gap']:+.2f}  "
                  f"top cue {r['top_cue']}{place}{also}  codes {', '.join(r['codes']) or '-'}")
    failed = [r for r in rows if not r["audit_ok"]]
    if failed:
        print(f"\nfailed audits: {len(failed)}")
        for r in failed:
            print(f"  {r['case']:34} {r['model']:8} on {r['probe']:12} {r['audit_error']}")


def write_results(out: Path, rows: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=list(cues.FAMILIES), help="default: all")
    parser.add_argument("--cues", nargs="+", choices=list(cues.CUES), help="default: all")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, help="default: all")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench_shortcuts")
    parser.add_argument("--jobs", type=int, default=2, help="models trained / audits run at a time")
    parser.add_argument("--quick", action="store_true",
                        help="shapes, corner and blur, PlainNet, seed 0 (unless given)")
    parser.add_argument("--reaudit", action="store_true", help="re-run every audit; keep the trained models")
    parser.add_argument("--report-only", action="store_true",
                        help="score the audits finished so far (while a run is going); train and audit nothing")
    parser.add_argument("--train-only", action="store_true", help="make the probe sets and models, audit nothing")
    parser.add_argument("--no-partial-decorrelated", action="store_true",
                        help="skip auditing partial models on the decorrelated probe set")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"families": list(cues.FAMILIES), "cues": list(cues.CUES),
                                         "archs": list(ARCHS), "seeds": [0, 1]}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    log = lambda message: print(message, flush=True)  # noqa: E731
    layout, detector = Layout(args.out.resolve()), detector_fingerprint()
    cases = [Case(family, cue, arch, seed) for family in args.families for cue in args.cues
             for arch in args.archs for seed in args.seeds]
    audits = [pair for pair in AUDITS if not (args.no_partial_decorrelated and pair == ("partial", "decorrelated"))]
    jobs = [AuditJob(case, model_kind, probe_kind, layout.model(case, model_kind),
                     layout.probe(case, probe_kind), layout.audit(case, model_kind, probe_kind))
            for case in cases for model_kind, probe_kind in audits]
    log(f"{len(cases)} cases ({len(args.families)} families x {len(args.cues)} cues x {len(args.archs)} "
        f"architectures x {len(args.seeds)} seeds), "
        f"{len(jobs)} audits, in {layout.root}")
    if args.report_only:
        rows = [score(job) for job in jobs if finished(job)]
    else:
        prepare(args, cases, {probe for _, probe in audits}, layout, log)
        if args.train_only:
            return
        audit_missing([job for job in jobs if args.reaudit or not audit_is_fresh(job)], args.jobs, detector, log)
        rows = [score(job) for job in jobs]
        write_results(layout.root, rows)
    print_report(rows)
    print_footer(rows, detector, time.perf_counter() - started, layout.root)


def finished(job: AuditJob) -> bool:
    record = read_json(job.out / "audit.json")
    return bool(record) and (job.model / "model.pt2").exists() and audited_these_inputs(job, record)


def prepare(args: argparse.Namespace, cases: list[Case], probe_kinds: set[str], layout: Layout,
            log: Callable[[str], None]) -> None:
    """The probe sets and the trained models, where missing or made by other code or settings."""
    stamp = fingerprint()
    for case in {Case(c.family, c.cue, "", c.seed) for c in cases}:
        for kind in sorted(probe_kinds):
            write_probe(layout.probe(case, kind), case, kind, stamp)
    models = [(case, kind) for case in cases for kind in MODEL_ALIGNMENT]
    train_missing([(c, k) for c, k in models if not model_is_fresh(layout.model(c, k), stamp)], layout, stamp,
                  args.jobs, log)


def print_footer(rows: list[dict], detector: str, seconds: float, root: Path) -> None:
    stale = sum(r["audit_ok"] and r["detector"] != detector for r in rows)
    if stale:
        print(f"\nnote: {stale} audits were made with other detector code (auditsvc/battery); --reaudit redoes them")
    audit_seconds = [r["audit_seconds"] for r in rows if r["audit_ok"] and r["audit_seconds"]]
    mean = f"{np.mean(audit_seconds):.1f} s" if audit_seconds else "-"
    print(f"\nwall time {seconds:.0f} s; mean audit {mean} over {len(audit_seconds)} audits; "
          f"results in {root / 'results.json'} and results.csv")


if __name__ == "__main__":
    main()
