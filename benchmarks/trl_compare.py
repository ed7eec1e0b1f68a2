"""The project's training steps against TRL's on identical work: speed, MFU, memory, step-1 loss.

    python benchmarks/trl_compare.py [--sizes tiny,small] [--trainers sft,reward,dpo,ppo]
                                     [--steps 4] [--repeats 3] [--threads N]
                                     [--precision fp32|bf16] [--model DIR] [--device cpu|cuda]
    pip install -e '.[bench]'    # TRL 1.16: the TRL columns (without it they read "not installed")

`--model DIR` adds the size `model`: that checkpoint (any HF causal LM with its tokenizer, e.g.
SmolLM2-135M-Instruct) as policy, its body with a scalar head as reward model, its own chat
template for PPO's prompts; `--sizes` then defaults to `model`. `--device cuda` (the default where
a GPU is visible) runs both sides and the peak measurement on the GPU and reports its memory; the
GPU check of the speed targets is

    python benchmarks/trl_compare.py --model DIR --precision bf16 --trainers sft,dpo,ppo

Both sides start from one saved state dict per GPT-2 size, take the same token sequences in the
same batches and use the same settings (benchmarks/trl_peer/settings.py): SFT (SFTTrainer),
the Bradley-Terry reward model (RewardTrainer), DPO with an in-step reference (DPOTrainer) and
PPO (TRL 1.12's PPOTrainer, installed by this script under .state/bench/trl-1.12 when missing,
since TRL 1.16 has no PPO). Every (trainer, size, side) runs in its own process, repeats
interleaved (project, TRL, project, TRL, ...), warm-up steps untimed (benchmarks/trl_peer/measure.py
says exactly what is measured). A ratio is the median over repeats of a project run against the TRL
run right after it; it is also given with each run's speed divided by the host's matmul rate
measured around that run, and as the ratio of the two sides' fastest timed steps. On a shared
machine whose speed changes severalfold within minutes, the three agree when the host held its
speed through both sides' runs and disagree when a slow spell fell on one side's: the `host`
figure of each progress line says which runs it hit. `--precision bf16` runs both sides under bf16 autocast (fp32
weights and optimizer; TRL's `bf16=True`), where the CPU multiplies bf16 natively. Prints samples/s
(PPO: episodes/s), tokens/s, MFU against this machine's matmul peak in the run's precision (and, in
bf16, the same FLOP rate against the fp32 peak), peak RSS (GPU memory on a GPU) and project/TRL ratios; the PPO split (sampling, scoring,
update) and sampling's FLOP rate; and the step-1 losses of both sides, which must agree to 1e-5
relative in fp32 (2e-3 in bf16, whose rounding differs with the order of operations; 2e-2 for a
checkpoint's deeper stack in bf16) for SFT, reward and DPO (PPO samples differ, so its losses are
shown, not compared).
The defaults take about 13 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `benchmarks.trl_peer` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.trl_peer.settings import (  # noqa: E402
    BATCH,
    PRECISIONS,
    PPO_NEW_TOKENS,
    PPO_PROMPT_LEN,
    SEQ_LEN,
    SIZES,
    TRAINERS,
    WARMUP_STEPS,
)
from benchmarks.trl_peer.fixtures import MODEL_SIZE  # noqa: E402

PPO_PEER_DIR = ROOT / ".state" / "bench" / "trl-1.12"  # TRL 1.12, beside the environment's TRL
PPO_PEER_PIN = "trl==1.12.0"
LOSS_RTOL = {"fp32": 1e-5, "bf16": 2e-3}  # step-1 losses of SFT, reward and DPO must agree this closely
# a checkpoint's many bf16 layers round further apart along the two sides' orders of operations: on
# SmolLM2-135M (30 layers) the reward step-1 losses were identical in fp32 (0.6993370) and 0.7012 / 0.7065 in bf16
MODEL_BF16_RTOL = 2e-2
Say = Callable[[str], None]  # where the report goes
PerRun = Callable[[dict], float]  # a figure of one run's result
Key = tuple[str, str, str]  # (trainer, size, side)


@dataclass
class Runs:
    """The results of every repeat of one (trainer, size, side), or why there are none."""

    results: list[dict]
    missing: str = ""  # "not installed", "unavailable: ..." when `results` is empty

    def median(self, per_run: PerRun) -> float:
        return statistics.median(per_run(r) for r in self.results)

    def spread(self, per_run: PerRun) -> float:
        """Half the range over repeats, relative to the median."""
        values = [per_run(r) for r in self.results]
        return (max(values) - min(values)) / 2 / statistics.median(values)


def report(line: str) -> None:
    print(line, flush=True)  # progress shows as it happens, also when piped


def timed(r: dict) -> float:
    return sum(r["step_seconds"])


def samples_per_s(r: dict) -> float:
    return r["samples_per_step"] * len(r["step_seconds"]) / timed(r)


def tokens_per_s(r: dict) -> float:
    return r["tokens_per_step"] * len(r["step_seconds"]) / timed(r)


def memory(r: dict) -> float:
    """Peak GPU memory of a GPU run, else peak RSS (MiB)."""
    return r.get("gpu_mib") or r["rss_mib"]


def flops_per_s(r: dict) -> float:
    return r["flops_per_step"] * len(r["step_seconds"]) / timed(r)


def per_host_speed(r: dict) -> float:
    """Samples/s over the host's matmul rate around the run (measure.host_probe): what is left of
    the run's speed once a change in the machine's own speed is divided out."""
    return samples_per_s(r) / r["probe_flops"]


def best_step_speed(runs: Runs) -> float:
    """Samples/s of the fastest timed step of every repeat: the step the machine slowed least (its
    speed only ever drops below what it can do, so the fastest step is the least disturbed one). A
    PPO iteration's work depends on how long its sampled responses are, so there the fastest
    iteration may also be a shorter one."""
    return runs.results[0]["samples_per_step"] / min(t for r in runs.results for t in r["step_seconds"])


def paired(mine: Runs, peer: Runs, per_run: PerRun) -> list[float]:
    """project / TRL of `per_run` for each repeat, a project run against the TRL run right after it
    (the runs interleave), so that a slow spell of the machine falls mostly inside one pair."""
    return [per_run(a) / per_run(b) for a, b in zip(mine.results, peer.results)]


def ratio_cell(ratios: list[float]) -> str:
    """The median of pairwise ratios, with their range when there are several."""
    mid = f"{statistics.median(ratios):.2f}x"
    return mid if len(ratios) < 2 else f"{mid} ({min(ratios):.2f}-{max(ratios):.2f})"


# ---------------------------------------------------------------- running
def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The options; `description` (default: this module's first line) heads `--help`."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None,
                        help=f"comma-separated, of {','.join(SIZES)} (and {MODEL_SIZE} with --model); "
                             f"default tiny,small, or {MODEL_SIZE} with --model")
    parser.add_argument("--trainers", default=",".join(TRAINERS), help=f"comma-separated, of {','.join(TRAINERS)}")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps (PPO: iterations) per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, or bf16 autocast on both sides (needs native bf16 matmul)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"an HF causal-LM checkpoint directory: adds the size {MODEL_SIZE!r}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where both sides run (default: cuda when a GPU is visible, else cpu)")
    args = parser.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU here")
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there (an HF model directory is needed)")
    args.sizes = (args.sizes or (MODEL_SIZE if args.model else "tiny,small")).split(",")
    args.trainers = args.trainers.split(",")
    sizes = {**SIZES, **({MODEL_SIZE: args.model} if args.model else {})}
    for name, given, known in (("size", args.sizes, sizes), ("trainer", args.trainers, TRAINERS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {list(known)}")
    if args.steps < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--steps, --repeats and --threads must be positive")
    return args


def installed_trl() -> str | None:
    try:
        return importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        return None


def ppo_peer(say: Say) -> str:
    """'' when TRL 1.12 is ready under PPO_PEER_DIR (installed now if missing), else why not."""
    if (PPO_PEER_DIR / "trl" / "__init__.py").is_file():
        return ""
    say(f"installing {PPO_PEER_PIN} into {PPO_PEER_DIR.relative_to(ROOT)} for the PPO peer ...")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                           str(PPO_PEER_DIR), PPO_PEER_PIN], capture_output=True, text=True)
    return "" if done.returncode == 0 else f"unavailable: pip could not install {PPO_PEER_PIN}"


def run_worker(spec: dict, work: Path) -> dict:
    """One worker process (benchmarks/trl_peer/worker.py); its output goes to a log under `work`,
    shown when it fails."""
    name = f"{spec['trainer']}-{spec['size']}-{spec['side']}-{spec['repeat']}"
    spec_file, out_file, log_file = work / f"{name}.spec.json", work / f"{name}.out.json", work / f"{name}.log"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    if spec["side"] == "trl" and spec["trainer"] == "ppo":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PPO_PEER_DIR), str(ROOT), env.get("PYTHONPATH")) if p)
    with log_file.open("w", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m", "benchmarks.trl_peer.worker", str(spec_file), str(out_file)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"worker {name} failed (exit {done.returncode}):\n{tail}")
    return json.loads(out_file.read_text(encoding="utf-8"))


def collect(args: argparse.Namespace, with_trl: bool, warmup: int, say: Say) -> dict[Key, Runs]:
    """Every (trainer, size, side) run `args.repeats` times, project and TRL interleaved."""
    from benchmarks.trl_peer.fixtures import write_fixtures, write_model_fixtures

    trl = installed_trl() if with_trl else None
    missing = {t: ("" if trl else "not installed" if with_trl else "skipped (project side only)") for t in TRAINERS}
    if trl and "ppo" in args.trainers:
        missing["ppo"] = ppo_peer(say)
    runs = {(t, s, side): Runs([], "" if side == "project" else missing[t])
            for t in args.trainers for s in args.sizes for side in ("project", "trl")}
    sides = ["project"] + (["trl"] if trl else [])
    todo = args.repeats * sum(not r.missing for r in runs.values())
    with tempfile.TemporaryDirectory(prefix="trl-compare-") as tmp:
        work = Path(tmp)
        gpt2 = [s for s in args.sizes if s != MODEL_SIZE]
        say(f"writing fixtures (tokenizer, {len(gpt2)} GPT-2 sizes{f', {args.model.name}' if args.model else ''}, "
            f"data for {warmup + args.steps} steps) ...")
        roots = {size: work for size in gpt2}
        if gpt2:
            write_fixtures(work, gpt2, warmup + args.steps)
        if MODEL_SIZE in args.sizes:  # a checkpoint's fixtures: its own tokenizer and data
            roots[MODEL_SIZE] = work / "checkpoint"
            write_model_fixtures(roots[MODEL_SIZE], args.model, warmup + args.steps)
        done = 0
        for size in args.sizes:
            for trainer in args.trainers:
                for repeat in range(args.repeats):
                    for side in sides:
                        if runs[trainer, size, side].missing:
                            continue
                        spec = {"side": side, "trainer": trainer, "size": size, "root": str(roots[size]),
                                "repeat": repeat, "warmup": warmup, "steps": args.steps, "threads": args.threads,
                                "precision": args.precision, "device": args.device,
                                "profile": getattr(args, "profile", False)}
                        t0 = time.perf_counter()
                        result = run_worker(spec, work)
                        runs[trainer, size, side].results.append(result)
                        done += 1
                        say(f"[{done}/{todo}] {trainer:6s} {size:5s} {side:7s} repeat {repeat + 1}: "
                            f"{samples_per_s(result):8.2f} samples/s, {time.perf_counter() - t0:5.1f} s in all, "
                            f"host {result['probe_flops'] / 1e9:4.0f} GFLOP/s")
    return runs


# ---------------------------------------------------------------- reporting
def table(runs: dict[Key, Runs], trainers: list[str], sizes: list[str], peak: float, fp32_peak: float | None = None,
          mem_label: str = "peak RSS") -> list[str]:
    """The main table: one line per side, the ratios on the project's line. With `fp32_peak` (a bf16
    run) a column gives the same FLOP rate against the fp32 peak."""
    extra = f"{'of fp32':>9s}" if fp32_peak else ""
    head = (f"{'trainer':8s}{'size':7s}{'side':9s}{'samples/s':>16s}{'tokens/s':>11s}{'MFU':>8s}{extra}"
            f"{mem_label:>11s}   project/TRL")
    lines = [head, "-" * len(head)]
    for trainer in trainers:
        for size in sizes:
            mine, peer = runs[trainer, size, "project"], runs[trainer, size, "trl"]
            for side, r in (("project", mine), ("TRL", peer)):
                if not r.results:
                    lines.append(f"{trainer:8s}{size:7s}{side:9s}  {r.missing}")
                    continue
                rss = max(memory(x) for x in r.results)
                of_fp32 = f"{100 * r.median(flops_per_s) / fp32_peak:8.1f}%" if fp32_peak else ""
                cells = (f"{r.median(samples_per_s):9.2f} ±{100 * r.spread(samples_per_s):3.0f}%"
                         f"{r.median(tokens_per_s):11,.0f}{100 * r.median(flops_per_s) / peak:7.1f}%{of_fp32}"
                         f"{rss:7.0f} MiB")
                ratio = ""
                if side == "project" and peer.results:
                    ratio = (f"   speed {ratio_cell(paired(r, peer, samples_per_s))}, "
                             f"per host speed {ratio_cell(paired(r, peer, per_host_speed))}, "
                             f"best step {best_step_speed(r) / best_step_speed(peer):.2f}x, "
                             f"memory {rss / max(memory(x) for x in peer.results):.2f}x")
                lines.append(f"{trainer:8s}{size:7s}{side:9s}{cells}{ratio}")
    return lines


def ppo_split(runs: dict[Key, Runs], sizes: list[str], peak: float) -> list[str]:
    """Where a PPO iteration's time goes, and sampling's FLOP rate (2 N per sampled token)."""
    lines = [f"{'size':7s}{'side':9s}{'sampling':>10s}{'scoring':>10s}{'update':>10s}{'other':>8s}"
             f"{'sampled tok/s':>15s}{'sampling FLOP/s / peak':>24s}"]
    for size in sizes:
        for side, label in (("project", "project"), ("trl", "TRL")):
            r = runs.get(("ppo", size, side))
            if r is None or not r.results:
                continue
            total = sum(timed(x) for x in r.results)
            share = {k: sum(sum(x[k]) for x in r.results) / total
                     for k in ("generate_seconds", "score_seconds", "update_seconds")}
            gen_s = sum(sum(x["generate_seconds"]) for x in r.results)
            sampled = sum(sum(x["generated_tokens"]) for x in r.results)
            rate = r.results[0]["gen_flops_per_token"] * sampled / gen_s
            lines.append(f"{size:7s}{label:9s}{100 * share['generate_seconds']:9.0f}%"
                         f"{100 * share['score_seconds']:9.0f}%"
                         f"{100 * share['update_seconds']:9.0f}%{100 * (1 - sum(share.values())):7.0f}%"
                         f"{sampled / gen_s:15,.0f}{100 * rate / peak:23.2f}%")
    return lines


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def loss_check(runs: dict[Key, Runs], trainers: list[str], sizes: list[str], rtol: float,
               model_rtol: float | None = None) -> tuple[list[str], list[str]]:
    """Lines comparing step-1 (and step-2) losses and step-1 metrics, and the failures (step-1
    relative difference above `rtol` for SFT, reward and DPO; `model_rtol`, if given, for a
    checkpoint's size)."""
    lines = [f"{'trainer':8s}{'size':7s}{'project step 1':>17s}{'TRL step 1':>17s}{'rel. diff':>11s}"
             f"{'step 2 diff':>13s}   step-1 metrics (rel. diff)"]
    failures = []
    for trainer in trainers:
        for size in sizes:
            mine, peer = runs[trainer, size, "project"], runs[trainer, size, "trl"]
            if not (mine.results and peer.results):
                continue
            a, b = mine.results[0], peer.results[0]
            if trainer == "ppo":  # policy + c1 * value loss, mean over iteration 1's optimizer steps
                lines.append(f"{trainer:8s}{size:7s}{a['losses'][0]:17.8f}{b['losses'][0]:17.8f}   not comparable: "
                             f"each side samples its own responses; iteration-1 KL to the reference (policy = "
                             f"reference) {a['metrics']['objective/kl']:.1e} vs {b['metrics']['objective/kl']:.1e}")
                continue
            d1 = rel(a["losses"][0], b["losses"][0])
            d2 = rel(a["losses"][1], b["losses"][1]) if min(len(a["losses"]), len(b["losses"])) > 1 else float("nan")
            extra = ", ".join(f"{k} {rel(v, b['metrics'][k]):.0e}" for k, v in a["metrics"].items()
                              if k in b["metrics"])
            lines.append(f"{trainer:8s}{size:7s}{a['losses'][0]:17.10f}{b['losses'][0]:17.10f}{d1:11.1e}{d2:13.1e}"
                         f"   {extra}")
            if not d1 <= (model_rtol or rtol if size == MODEL_SIZE else rtol):
                failures.append(f"{trainer} {size}: step-1 losses differ by {d1:.2e} relative "
                                f"(project {a['losses'][0]!r}, TRL {b['losses'][0]!r})")
    return lines, failures


def run(argv: list[str] | None = None, with_trl: bool = True, warmup: int = WARMUP_STEPS, say: Say = report
        ) -> dict[Key, Runs]:
    """Run the benchmark as the command line `argv` asks, print the report through `say`, and return
    the runs. `with_trl=False` runs the project side only; `warmup` steps go untimed."""
    import torch

    from benchmarks.trl_peer.measure import matmul_dtype, peak_matmul_flops

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    dtype = matmul_dtype(args.precision)
    peak_before = peak_matmul_flops(dtype=dtype, device=args.device)
    trl = installed_trl() if with_trl else None
    where = (f"{torch.cuda.get_device_name()}" if args.device == "cuda"
             else f"{args.threads} threads on {len(os.sched_getaffinity(0))} cores")
    say(f"torch {torch.__version__}, {where}, "
        f"{args.precision} matmul {peak_before / 1e9:.0f} GFLOP/s; TRL {trl or 'not installed'}"
        f"{', PPO peer TRL 1.12' if trl and 'ppo' in args.trainers else ''}")
    if args.model:
        say(f"size {MODEL_SIZE}: {args.model}")
    say(f"batch {BATCH}, {SEQ_LEN}-token sequences (PPO: {PPO_PROMPT_LEN}-token prompts, more under a checkpoint's "
        f"chat template, + {PPO_NEW_TOKENS} sampled), "
        f"{warmup} warm-up + {args.steps} timed steps, {args.repeats} repeats per side, {args.precision}"
        f"{' autocast' if args.precision == 'bf16' else ''}")
    runs = collect(args, with_trl, warmup, say)
    load_after = os.getloadavg()
    # again, and every worker's probe too: a slow spell of the host lowers any one measurement
    probes = [r["probe_flops"] for rs in runs.values() for r in rs.results]
    peak = max(peak_before, peak_matmul_flops(dtype=dtype, device=args.device), *probes)
    fp32_peak = peak_matmul_flops(device=args.device) if args.precision == "bf16" else None
    say("")
    say(f"peak: best {args.precision} matmul rate before and after the runs and around each, {peak / 1e9:.0f} GFLOP/s"
        f"{f'; fp32 {fp32_peak / 1e9:.0f} GFLOP/s (column of fp32)' if fp32_peak else ''}")
    say("samples/s: sequences (SFT), pairs (reward, DPO), episodes (PPO); median of repeats ± half their range")
    say("project/TRL: median over repeats of the ratio of a project run to the TRL run after it (range in "
        "brackets); per host speed: the same with each run's samples/s divided by the host's matmul rate "
        "around it (measure.host_probe); best step: the fastest timed step of each side")
    say("MFU: 6 N per trained token + 2 N per forward-only token / peak; N = parameters without embeddings, "
        "plus the tied LM head (benchmarks/trl_peer/measure.py)")
    for line in table(runs, args.trainers, args.sizes, peak, fp32_peak,
                      "GPU mem" if args.device == "cuda" else "peak RSS"):
        say(line)
    if "ppo" in args.trainers:
        say("")
        say("PPO iteration: share of time sampling / scoring (teacher-forced passes, reward, GAE) / updating / other "
            "(TRL: garbage collection and the next batch between iterations)")
        for line in ppo_split(runs, args.sizes, peak):
            say(line)
    lines, failures = loss_check(runs, args.trainers, args.sizes, LOSS_RTOL[args.precision],
                                 MODEL_BF16_RTOL if args.precision == "bf16" else None)
    if len(lines) > 1:
        say("")
        say("step-1 loss, same weights and batch (step 2 after one AdamW step each)")
        for line in lines:
            say(line)
    busy = max(load_before[0], load_after[0]) > len(os.sched_getaffinity(0))
    say(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}"
        f"{': other work shared these cores, so figures are noisy' if busy else ''}")
    assert not failures, "\n".join(failures)
    return runs


if __name__ == "__main__":
    run()
