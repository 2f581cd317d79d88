"""The pipeline's step runner: finished steps are skipped, failures leave no marker, a retry resumes."""
from __future__ import annotations

import sys

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
