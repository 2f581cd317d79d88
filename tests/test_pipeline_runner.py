"""The pipeline's step runner: finished steps are skipped, failures leave no marker, a retry resumes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nnunet_dfg.errors import UserError
from nnunet_dfg.pipeline.runner import Runner, Step
from nnunet_dfg.pipeline.stage_table import format_stage_table, stage_table


def test_steps_run_once_and_resume(tmp_path):
    out = tmp_path / "count.txt"
    step = Step("append", [sys.executable, "-c", f"open({str(out)!r}, 'a').write('x')"])
    runner = Runner(tmp_path / "work", {}, quiet=True)
    runner.run(step)
    runner.run(step)
    Runner(tmp_path / "work", {}, quiet=True).run(step)  # a new run of the pipeline
    assert out.read_text() == "x"


def test_failure_leaves_no_marker_and_retry_command_is_used(tmp_path):
    flag = tmp_path / "resumed"
    step = Step("train", [sys.executable, "-c", "raise SystemExit(3)"],
                retry_command=[sys.executable, "-c", f"open({str(flag)!r}, 'w')"])
    runner = Runner(tmp_path / "work", {}, quiet=True)
    with pytest.raises(UserError, match="step train failed \\(exit 3\\)"):
        runner.run(step)
    assert not runner.done("train")
    runner.run(step)
    assert flag.exists() and runner.done("train")


def test_lazy_commands_are_resolved_when_the_step_runs(tmp_path):
    target = tmp_path / "made_later"
    step = Step("lazy", lambda: [sys.executable, "-c", f"open({str(target)!r}, 'w')"])
    Runner(tmp_path / "work", {}, quiet=True).run(step)
    assert target.exists()


def test_stage_table_reads_evaluations(tmp_path):
    import json
    (tmp_path / "eval").mkdir()
    result = {"mean_dice": 0.5, "mean_assd": 2.0, "per_class": {"liver": {"dice": 0.5, "assd": 2.0}}}
    (tmp_path / "eval" / "fa.json").write_text(json.dumps(result))
    table = stage_table(tmp_path / "eval")
    assert list(table) == ["fa"] and table["fa"]["mean_dice"] == 0.5
    text = format_stage_table(table)
    assert "fa" in text and "0.500" in text and "liver" in text


def test_pipeline_steps_refine_once_and_start_the_oracle_from_the_source(tmp_path):
    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig

    cfg = PipelineConfig(source_id=701, target_id=702, variant="_demo", oracle_variant="_demoFinetune",
                         target_labels_tr=tmp_path / "labelsTr", target_labels_ts=tmp_path / "labelsTs")
    pipeline = DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path / "raw", tmp_path / "res")
    steps = {s.name: s for s in pipeline.steps()}
    refine = steps["refine"].command
    assert refine[refine.index("--prompt") + 1] == "dfg,box,sdg" and not any(n.startswith("refine_") for n in steps)
    assert [cfg.pseudo_id(p) for p in ("dfg", "box", "sdg")] == [802, 812, 822]  # refine's default ids
    # the FA model's own labels on the training images (the baseline of the refined pseudo-labels) come from
    # refine's labels_model folder, not from a second prediction
    assert "evaluate_pseudo_fa" in steps and "predict_pseudo_fa" not in steps
    oracle = steps["train_oracle"]
    assert oracle.retry_command[oracle.retry_command.index("-tr") + 1] == "nnUNetTrainerDFG_Source_demoFinetune"
    (tmp_path / "res" / "Dataset701_X").mkdir(parents=True)
    first = oracle.command() if callable(oracle.command) else oracle.command
    init = first[first.index("-pretrained_weights") + 1]
    assert init.endswith("Dataset701_X/nnUNetTrainerDFG_Source_demo__nnUNetPlans__2d/fold_0/checkpoint_final.pth")


def test_a_given_sdg_checkpoint_replaces_the_fine_tuning_step(tmp_path):
    """``sdg_checkpoint``: the fine-tuned decoder of this source model (it learnt from the source only) predicts the
    sdg row of another target without training a second one."""
    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig

    checkpoint = tmp_path / "decoder.pth"
    cfg = PipelineConfig(source_id=701, target_id=703, target_labels_ts=tmp_path / "labelsTs",
                         sdg_checkpoint=checkpoint)
    for folder in ("res/Dataset701_X", "raw/Dataset703_Y"):
        (tmp_path / folder).mkdir(parents=True)
    steps = {s.name: s for s in DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path / "raw",
                                            tmp_path / "res").steps()}
    assert "finetune_sam" not in steps and "evaluate_sdg" in steps and "evaluate_sdg_no_finetune" in steps
    command = steps["predict_sdg"].command
    command = command() if callable(command) else command
    assert command[command.index("--sam") + 1] == str(checkpoint)


def test_cpu_plans_seed_and_the_source_in_domain_row(tmp_path):
    import json

    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig

    cfg = PipelineConfig(source_id=701, target_id=702, plans="nnUNetPlansCPU", seed=7,
                         target_labels_tr=tmp_path / "labelsTr", target_labels_ts=tmp_path / "labelsTs")
    pipeline = DFGPipeline(cfg, Runner(tmp_path / "work", {"nnUNet_preprocessed": str(tmp_path / "pre")}),
                           tmp_path / "raw", tmp_path / "res")
    steps = {s.name: s for s in pipeline.steps()}
    names = list(steps)
    assert names.index("plan_source") < names.index("cpu_plans") < names.index("train_source")
    trains = [s for n, s in steps.items() if n.startswith("train_")]
    assert len(trains) == 4 and all(s.env == {"nnUNet_dfg_seed": "7"} for s in trains)
    assert all(s.retry_command[s.retry_command.index("-p") + 1] == "nnUNetPlansCPU" for s in trains)
    assert "evaluate_source_in_domain" in steps
    plans = {"plans_name": "nnUNetPlans", "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "architecture": {
        "arch_kwargs": {"n_stages": 2, "features_per_stage": [32, 64]}}}}}
    (tmp_path / "pre" / "Dataset701_X").mkdir(parents=True)
    (tmp_path / "pre" / "Dataset701_X" / "nnUNetPlans.json").write_text(json.dumps(plans))
    steps["cpu_plans"].action()
    written = json.loads((tmp_path / "pre" / "Dataset701_X" / "nnUNetPlansCPU.json").read_text())
    assert written["plans_name"] == "nnUNetPlansCPU"
    assert written["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32]


def test_no_source_in_domain_row_when_the_source_trains_on_all_cases(tmp_path):
    from nnunet_dfg.pipeline.dfg import DFGPipeline, PipelineConfig

    cfg = PipelineConfig(source_id=701, target_id=702, source_fold="all")
    names = [s.name for s in DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path, tmp_path).steps()]
    assert "evaluate_source_in_domain" not in names and "cpu_plans" not in names


@pytest.mark.parametrize("subcommand, flags, sdg, finetuned", [
    ("pipeline", [], True, True), ("pipeline", ["--no-sdg"], False, True),
    ("pipeline", ["--no-sdg-finetune"], True, False), ("demo", [], True, True),
    ("demo", ["--no-sdg"], False, True), ("demo", ["--no-sdg-finetune"], True, False)])
def test_pipeline_and_demo_flags_skip_the_sdg_rows(tmp_path, monkeypatch, subcommand, flags, sdg, finetuned):
    """SDG is not source-free (finetune-sam trains on the source labels): --no-sdg drops its steps and rows;
    --no-sdg-finetune drops the fine-tuning and the sdg row (SDG with the fine-tuned decoder), keeping the
    sdg_no_finetune ablation. Both produce the sdg row by default, the demo on a smaller budget."""
    from nnunet_dfg import cli
    from nnunet_dfg.pipeline import command
    from nnunet_dfg.pipeline.dfg import DFGPipeline

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    configs = []
    monkeypatch.setattr(command, "_run", lambda cfg, *a, **k: configs.append(cfg))
    where = ["-s", "701", "-t", "702", "-o", str(tmp_path / "w")] if subcommand == "pipeline" else ["-o", str(tmp_path)]
    assert cli.main([subcommand, *where, *flags]) == 0
    assert len(configs) == 1
    (tmp_path / "Dataset701_S").mkdir()  # the source's results folder, as after source training
    for cfg in configs:
        assert (cfg.sdg, cfg.sdg_finetuned) == (sdg, finetuned)
        names = [s.name for s in DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path, tmp_path).steps()]
        assert ("finetune_sam" in names) == ("predict_sdg" in names) == (sdg and finetuned)
        assert ("predict_sdg_no_finetune" in names) == sdg
        if subcommand == "demo" and sdg and finetuned:
            finetune = next(s for s in DFGPipeline(cfg, Runner(tmp_path / "work", {}), tmp_path, tmp_path).steps()
                            if s.name == "finetune_sam").command()
            assert finetune[finetune.index("--epochs") + 1] == "2" and "--batch-canvases" in finetune


def test_pipeline_command_passes_its_options_to_the_chain(tmp_path, monkeypatch):
    """The README's `pipeline` flags reach the chain's configuration (the whole chain runs in test_demo_cli.py
    through `demo`, which shares this runner, and step by step through the stock commands in test_stock_cli.py)."""
    from nnunet_dfg import cli
    from nnunet_dfg.pipeline import command

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    configs = []
    monkeypatch.setattr(command, "_run", lambda cfg, *a, **k: configs.append(cfg))
    assert cli.main(["pipeline", "-s", "701", "-t", "702", "-o", str(tmp_path / "w"), "--variant", "_test",
                     "-p", "nnUNetPlansCPU", "--no-oracle", "--search-config", '{"max_growth": 2.0}',
                     "--target-labels-tr", str(tmp_path / "ltr"), "--target-labels-ts", str(tmp_path / "lts"),
                     "--seed", "7", "-c", "3d_fullres"]) == 0
    cfg, = configs
    assert (cfg.source_id, cfg.target_id, cfg.configuration, cfg.variant, cfg.plans, cfg.seed) == \
        (701, 702, "3d_fullres", "_test", "nnUNetPlansCPU", 7)
    assert not cfg.oracle and cfg.search_config == '{"max_growth": 2.0}'
    assert Path(cfg.target_labels_tr) == tmp_path / "ltr" and Path(cfg.target_labels_ts) == tmp_path / "lts"
