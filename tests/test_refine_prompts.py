"""``refine --prompt dfg,box,sdg``: one pass over the cases writes one dataset per mode, each byte-identical to a
single-mode run, with each slice encoded once; and the embedding memo on its own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_copy
from _tiny_model import ThresholdSegmenter, TinyModel
from nnunet_dfg.errors import UserError
from nnunet_dfg.refine import RefineOptions, refine_dataset
from nnunet_dfg.refine.command import parse_search_configs, refine_datasets
from nnunet_dfg.sam.memo import EmbeddingMemo

SEARCH = ('{"presence_prob": 0.5, "presence_min_pixels": 20, "stage1_cos_threshold": 0.8, "threshold": 0.6, '
          '"reference_side": 0}')


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "refine_prompts")


def _opts(tiny: TinyModel, **kw) -> RefineOptions:
    return tiny.refine_options(**{"search_config": SEARCH, "max_slices": 4, **kw})


def _labels(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "labelsTr").iterdir())}


def test_several_modes_match_single_runs_and_encode_each_slice_once(tiny):
    shared = ThresholdSegmenter()
    summaries = refine_datasets(_opts(tiny, prompt="dfg,box,sdg"), shared)
    assert list(summaries) == ["dfg", "box", "sdg"]
    names = {p: Path(s["output"]).name for p, s in summaries.items()}
    assert names == {"dfg": "Dataset802_DFGSynthTargetPseudoDFG", "box": "Dataset812_DFGSynthTargetPseudoBOX",
                     "sdg": "Dataset822_DFGSynthTargetPseudoSDG"}  # each mode's default id
    singles = []
    for i, prompt in enumerate(("dfg", "box", "sdg")):
        seg = ThresholdSegmenter()
        own = json.dumps(parse_search_configs(["dfg", "box", "sdg"], SEARCH)[prompt][1])
        single = refine_dataset(_opts(tiny, prompt=prompt, out_id=830 + i, search_config=own), seg)
        singles.append(seg.embed_calls)
        assert _labels(Path(single["output"])) == _labels(Path(summaries[prompt]["output"])), prompt
    # the modes search the same 4 slices per case: a slice any of them needs is encoded once
    assert 0 < max(singles) <= shared.embed_calls <= 4 * 3 and shared.embed_calls < sum(singles)


@pytest.fixture
def own_tiny(tmp_path_factory, tiny_model_root) -> TinyModel:
    """A copy of its own, so the outcome does not depend on which test wrote outputs before."""
    yield from tiny_copy(tmp_path_factory, tiny_model_root, "refine_prompts_resume")


def test_several_modes_resume_per_mode(own_tiny):
    """A second run with the same modes (any order) skips every case of every mode."""
    first = refine_datasets(_opts(own_tiny, prompt="dfg,box"), ThresholdSegmenter())
    assert all(s["cases_done"] == ["case_0000", "case_0001", "case_0002"] for s in first.values())
    again = refine_datasets(_opts(own_tiny, prompt="box,dfg"), ThresholdSegmenter())
    assert all(s["cases_done"] == [] and s["cases_skipped"] == 3 for s in again.values())


def test_several_modes_refuse_one_output_name(tiny):
    with pytest.raises(UserError, match="--out-id/--name name one output"):
        refine_datasets(_opts(tiny, prompt="dfg,box", out_id=850), ThresholdSegmenter())
    with pytest.raises(UserError, match="one or more of"):
        refine_datasets(_opts(tiny, prompt="dfg,dfg"), ThresholdSegmenter())
    with pytest.raises(UserError, match="--tile 2"):
        refine_datasets(_opts(tiny, prompt="dfg,sdg", tile=2), ThresholdSegmenter())


def test_search_config_keys_go_to_the_modes_that_have_them():
    configs = parse_search_configs(["dfg", "sdg"], '{"presence_min_pixels": 7, "threshold": 0.6}')
    assert configs["dfg"][1] == {"presence_min_pixels": 7} and configs["dfg"][0].presence_min_pixels == 7
    assert configs["sdg"][1] == {"threshold": 0.6} and configs["sdg"][0].threshold == 0.6
    with pytest.raises(UserError, match="unknown"):
        parse_search_configs(["dfg", "sdg"], '{"nope": 1}')


def test_memo_encodes_equal_slices_once():
    seg = ThresholdSegmenter()
    memo = EmbeddingMemo(seg)
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    first = memo.embed(a)
    assert memo.embed(a.copy()) is first and seg.embed_calls == 1 and memo.hits == 1
    memo.embed(a + 1)
    assert seg.embed_calls == 2 and len(memo) == 2
    assert memo.segment(first, np.array([[0, 0, 3, 3]])).shape == (1, 4, 4)  # the rest is the segmenter's
    memo.clear()
    memo.embed(a)
    assert seg.embed_calls == 3
