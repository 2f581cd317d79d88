"""The stage table over nnU-Net configurations x seeds (x shift severities), on the synthetic benchmark.

Why seeds: one run is one draw of the data and of training, so every goal in BENCHMARKS.md is a paired difference
pooled over the cases of several seeds (``nnunet_dfg.statistics``); a seed fixes both the synthetic data and every
training run (``nnUNet_dfg_seed``), so a run is repeatable. Development seeds are where choices are made,
confirmation seeds are run once at a frozen commit (``DEVELOPMENT_SEEDS``, ``CONFIRMATION_SEEDS``). Each seed has 16
source, 16 adaptation and 16 test volumes on the narrower ``nnUNetPlansCPU`` network. The source model depends only
on the configuration and the seed, so every severity's chain starts from it, and a chain's branches that need only
that model (SDG, the oracle) run beside its DFG steps. Jobs run in a small thread pool of subprocesses (the
pipeline's own resumable steps), so a killed benchmark resumes where it stopped.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_dfg.cpu_plans import CPU_PLANS
from nnunet_dfg.nnunet_io import read_json
from nnunet_dfg.pipeline.command import DEMO_SEARCH_CONFIG
from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig
from nnunet_dfg.pipeline.runner import Runner, Step, nnunet_environment
from nnunet_dfg.pipeline.stage_table import stage_table

SOURCE_ID = 701
SOURCE_STEPS = ("plan_source", "cpu_plans", "train_source")
# a configuration without the chain still reports the source model in and out of its domain beside the oracle
REFERENCE_STEPS = ("predict_source_only", "oracle_dataset", "prepare_oracle", "train_oracle", "predict_oracle",
                   "evaluate_source_in_domain", "evaluate_source_only", "evaluate_oracle")
PARALLEL_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class ConfigSetting:
    """What one grid setting is benchmarked on: volume shape, trainer schedules, search thresholds, seeds."""

    shape: tuple[int, int, int]
    variant: str  # trainer-name suffix of the source, FA and ST trainers
    oracle_variant: str
    search_config: str
    seeds: tuple[int, ...] = (0,)
    chain: bool = True  # the whole DFG chain; False: only the source model's rows and the oracle (REFERENCE_STEPS)
    configuration: str = ""  # the nnU-Net configuration; "": the setting's key ("2d", "3d_fullres")


# Development seeds: every design choice, option and default was looked at on these. Confirmation seeds: named here
# before they ran, run once after every choice was frozen, at the commit each chain records (``commit.txt``); a
# choice changed after seeing them makes them development seeds, and new ones must be named.
DEVELOPMENT_SEEDS = (0, 1, 2)
CONFIRMATION_SEEDS = (100, 101, 102, 103, 104)

# The default grid (the hour on 2 cores): the 2d chain on the benchmark's 64 px slices over the development seeds.
# Behind --configurations: the 2d chain at 128 px (what the 64 px budget changes; about an hour a seed) and a
# 3d_fullres source model with its oracle (no adaptation chain: a 3D step with its augmentation costs several 2D
# steps on the CPU).
SHAPE = (36, 64, 64)
DEFAULT_SETTINGS = {"2d": ConfigSetting(SHAPE, "_bench", "_demoFinetune", DEMO_SEARCH_CONFIG, DEVELOPMENT_SEEDS)}
OPTIONAL_SETTINGS = {
    "2d_128": ConfigSetting((36, 128, 128), "_bench", "_demoFinetune", DEMO_SEARCH_CONFIG, (0,), configuration="2d"),
    "3d_fullres": ConfigSetting(SHAPE, "_bench3d", "_bench3dFinetune", DEMO_SEARCH_CONFIG, (0,), chain=False),
}
ALL_SETTINGS = {**DEFAULT_SETTINGS, **OPTIONAL_SETTINGS}


def seed_role(seed: int) -> str:
    return "confirmation" if seed in CONFIRMATION_SEEDS else "development"


@dataclass
class GridSpec:
    settings: dict = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    severities: tuple[float, ...] = (1.0,)
    n_source: int = 16
    n_target: int = 16
    n_test: int = 16
    plans: str = CPU_PLANS
    sdg: bool = True  # the SDG row (source boxes -> SAM)
    # the fine-tuned decoder row (sdg) in every chain. The budget is what the hour affords, not the reference's 200
    # passes (hours on 2 cores): passes over every boxed source slice, 16 slices a step, canvases reshuffled
    sdg_finetuned: bool = True
    finetune_epochs: int = 20
    # the reliable chain beside the reference one (issue 26): same search and FA model, the evidence rule's ignore label
    pseudo_ignore: str = "evidence"
    workers: int = 2  # jobs at once: on 2 cores two 1-thread jobs do ~1.5x the work of one 2-thread job
    memory_counts: tuple[int, ...] = (1, 3)  # cases per refine run in the memory figure
    timings: dict = field(default_factory=dict)

    @property
    def configurations(self) -> tuple[str, ...]:
        return tuple(self.settings)

    def runs(self) -> list[tuple[str, int]]:
        """(configuration, seed) pairs: each has its own data, source model and chains."""
        return [(c, seed) for c, setting in self.settings.items() for seed in setting.seeds]

    def target_id(self, severity: float) -> int:
        return 702 + self.severities.index(severity)


def _hidden(raw: Path, target_id: int) -> Path:
    return raw / "_hidden_labels" / f"Dataset{target_id:03d}_DFGSynthTarget"


def write_data(raw: Path, spec: GridSpec, seed: int, shape: tuple[int, int, int]) -> None:
    """Source + one target per severity. Per-case generators come from the seed alone, so every severity's target
    shows the same patients and the source is the same whichever severity wrote it."""
    from nnunet_dfg.synthetic import write_benchmark
    kw = dict(n_source=spec.n_source, n_target=spec.n_target, n_target_test=spec.n_test, seed=seed, shape=shape)
    for i, severity in enumerate(spec.severities):
        tid = spec.target_id(severity)
        if (raw / f"Dataset{tid:03d}_DFGSynthTarget").exists():
            continue
        if i == 0:
            write_benchmark(str(raw), source_id=SOURCE_ID, target_id=tid, severity=severity, **kw)
            continue
        scratch = Path(tempfile.mkdtemp(prefix=".grid_", dir=raw))
        try:
            write_benchmark(str(scratch), source_id=SOURCE_ID, target_id=tid, severity=severity, **kw)
            _hidden(raw, tid).parent.mkdir(exist_ok=True)
            shutil.move(str(_hidden(scratch, tid)), str(_hidden(raw, tid)))
            shutil.move(str(scratch / f"Dataset{tid:03d}_DFGSynthTarget"), str(raw))  # last: "exists" = complete
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


class GridRun:
    def __init__(self, spec: GridSpec, out: Path):
        self.spec, self.out = spec, out

    def root(self, configuration: str, seed: int) -> Path:
        return self.out / f"{configuration}_seed{seed}"

    def chain_work(self, configuration: str, seed: int, severity: float) -> Path:
        return self.root(configuration, seed) / f"severity{severity:g}"

    def pipeline(self, configuration: str, seed: int, severity: float, work: Path | None = None) -> DFGPipeline:
        """One chain's pipeline; ``work`` (its step markers, logs, predictions) defaults to the chain's folder."""
        s, root = self.spec, self.root(configuration, seed)
        env = nnunet_environment(root / "nnunet")
        if s.workers > 1:
            # one thread per job, waiting passively: nnUNetv2_predict still starts one torch thread per core, and
            # spinning OpenMP threads of two jobs on 2 cores made steps up to 10x slower
            env.update(PARALLEL_ENV)
        tid = s.target_id(severity)
        hidden = _hidden(Path(env["nnUNet_raw"]), tid)
        setting = s.settings[configuration]
        cfg = PipelineConfig(source_id=SOURCE_ID, target_id=tid, configuration=setting.configuration or configuration,
                             variant=setting.variant, oracle_variant=setting.oracle_variant, plans=s.plans, seed=seed,
                             target_labels_tr=hidden / "labelsTr", target_labels_ts=hidden / "labelsTs",
                             search_config=setting.search_config, sdg=s.sdg,
                             sdg_finetuned=s.sdg and s.sdg_finetuned, finetune_epochs=s.finetune_epochs,
                             pseudo_ignore=s.pseudo_ignore if setting.chain else "none")
        runner = Runner(work or self.chain_work(configuration, seed, severity), env, quiet=True)
        return DFGPipeline(cfg, runner, Path(env["nnUNet_raw"]), Path(env["nnUNet_results"]))

    def source_job(self, configuration: str, seed: int) -> None:
        root = self.root(configuration, seed)
        p = self.pipeline(configuration, seed, self.spec.severities[0], root / "source")
        raw = Path(p.runner.env["nnUNet_raw"])
        shape = self.spec.settings[configuration].shape
        steps = [Step("synthetic", action=lambda: write_data(raw, self.spec, seed, shape))]
        steps += [s for s in p.steps() if s.name in SOURCE_STEPS]
        self._run(p.runner, steps, f"{configuration} seed {seed}: source")

    def chain_job(self, configuration: str, seed: int, severity: float, branch: str, waits: list[Future]) -> None:
        """One branch of a chain (``chain_branches``) once the jobs it needs (``waits``) are done."""
        for job in waits:
            job.result()
        p = self.pipeline(configuration, seed, severity)
        steps = [s for s in p.steps() if s.name not in SOURCE_STEPS]
        if not self.spec.settings[configuration].chain:
            steps = [s for s in steps if s.name in REFERENCE_STEPS]
        steps.append(Step("commit", action=lambda: record_commit(p.runner.work / "commit.txt")))
        self._run(p.runner, chain_branches(steps)[branch], f"{configuration} seed {seed} severity {severity:g}: "
                                                          f"{branch}")

    def _run(self, runner: Runner, steps: list[Step], label: str) -> None:
        started = time.time()
        for step in steps:
            runner.run(step)
        self.spec.timings[label] = {**runner.timings, "total": time.time() - started}
        print(f"[grid] {label} done in {time.time() - started:.0f} s", flush=True)

    def run(self) -> list[dict]:
        s = self.spec
        with ThreadPoolExecutor(max_workers=s.workers) as pool:
            futures, sources = [], {}
            for kind, (c, seed) in job_order(s.runs(), s.workers):
                if kind == "source":
                    sources[c, seed] = pool.submit(self.source_job, c, seed)
                    futures.append(sources[c, seed])
                else:
                    for sev in s.severities:  # the branches beside one another, then the evaluations
                        branches = [pool.submit(self.chain_job, c, seed, sev, b, [sources[c, seed]])
                                    for b in BRANCHES]
                        futures += branches + [pool.submit(self.chain_job, c, seed, sev, "evaluate", branches)]
            for f in futures:
                f.result()
        return self.results()

    def results(self) -> list[dict]:
        """One record per finished chain: its stage table and the refine reports' stage statistics."""
        records = []
        for c, seed in self.spec.runs():
            for sev in self.spec.severities:
                work = self.chain_work(c, seed, sev)
                if not (work / "eval").is_dir():
                    continue
                p = self.pipeline(c, seed, sev)
                chain = self.spec.settings[c].chain  # without the chain there is no search to count
                commit = work / "commit.txt"
                records.append({"configuration": c, "seed": seed, "severity": sev, "role": seed_role(seed),
                                "commit": commit.read_text().strip() if commit.is_file() else "unknown",
                                "table": stage_table(work / "eval"),
                                "evaluations": {f.stem: read_json(f) for f in sorted((work / "eval").glob("*.json"))},
                                "search": search_statistics(p.raw, p.cfg.pseudo_id("dfg")) if chain else {}})
        return records


# A chain's steps after its source model, in branches that need only that model (run beside one another, so one
# seed keeps both workers busy), then the evaluations. "dfg" is the rest: FA, the search, self-training.
SIDE_BRANCHES = {"sdg": ("predict_sdg_no_finetune", "finetune_sam", "predict_sdg"),
                 "oracle": ("oracle_dataset", "prepare_oracle", "train_oracle", "predict_oracle")}
BRANCHES = ("dfg", *SIDE_BRANCHES)


def chain_branches(steps: list[Step]) -> dict[str, list[Step]]:
    """Branch name -> its steps in the chain's order; "evaluate" takes every ``evaluate_*`` step and the commit."""
    side = {name: branch for branch, names in SIDE_BRANCHES.items() for name in names}
    out: dict[str, list[Step]] = {b: [] for b in (*BRANCHES, "evaluate")}
    for step in steps:
        last = step.name.startswith("evaluate_") or step.name == "commit"
        out["evaluate" if last else side.get(step.name, "dfg")].append(step)
    return out


def job_order(runs: list[tuple[str, int]], workers: int) -> list[tuple[str, tuple[str, int]]]:
    """FIFO queue order for the pool: the first 2d source, then the dearest (3d) sources so that they overlap the 2d
    chains, then the other sources; each chain queued ``workers`` sources after its own, so a worker that takes
    it seldom waits for that source, and the first 2d chain starts while the 3d source still trains.

    A schedule simulation on the 67-min run's durations (2 workers): 3481 s of grid in this order against 3579 s
    in the old one (every source, then every chain; that run took 3590 s)."""
    dear = ("3d_fullres", "2d_128")
    cheap = [r for r in runs if r[0] not in dear]
    sources = cheap[:1] + [r for r in runs if r[0] in dear] + cheap[1:]
    order: list[tuple[str, tuple[str, int]]] = []
    for i, run in enumerate(sources):
        order.append(("source", run))
        if i >= workers:
            order.append(("chain", sources[i - workers]))
    order += [("chain", run) for run in sources[max(len(sources) - workers, 0):]]
    return order


def record_commit(path: Path) -> None:
    """The code a chain ran with: git's HEAD, marked ``+dirty`` where the package or the benchmarks had uncommitted
    changes (a confirmation figure must name a commit that holds every choice it was run under)."""
    import subprocess
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "nnunet_dfg", "benchmarks")
    path.write_text(head + ("+dirty" if dirty else "") + "\n")


def search_statistics(raw: Path, pseudo_id: int) -> dict:
    """Per class, on how many searched slices the DFG search ended in each stage (from refine's reports)."""
    from nnunet_dfg.nnunet_io import dataset_folder
    totals: dict[str, dict[str, int]] = {}
    labels: dict[str, str] = {}
    for report in sorted((dataset_folder(raw, pseudo_id) / "dfg_refine" / "reports").glob("*.json")):
        data = read_json(report)
        labels = {str(v): k for k, v in data["labels"].items()}
        for cls, counts in data["stages"].items():
            row = totals.setdefault(labels.get(cls, cls), {})
            for stage, n in counts.items():
                row[stage] = row.get(stage, 0) + n
    return totals
