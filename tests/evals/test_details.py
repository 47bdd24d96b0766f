"""The private details dataset (``evals.details``): it loads with ``datasets`` as it is, per side;
it carries benchmark text only where the licence allows; it is byte-identical on rebuild."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from apto_release.dataset.build import load_offline
from apto_release.errors import InputError
from apto_release.evals.benchmarks import load_spec, spec_names
from apto_release.evals.details import DETAILS_MARKER, REMOVED, build_details, details_features
from tests.evals.details_fixtures import write_run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("details")
    responses, judgements, items = write_run(root)
    result = build_details("Tiny-Safety", responses, judgements, root / "out" / "details", items=items,
                           repo_id="demo/Tiny-Safety-eval-details", model_repo="demo/Tiny-Safety")
    return result, items, (responses, judgements)


def _load(folder: Path, name: str):
    with tempfile.TemporaryDirectory() as cache:
        return load_offline(folder, name, cache_dir=cache)


def test_each_side_loads_as_a_config_with_typed_rows(built):
    result, items, _ = built
    assert result.rows == {"before": 17, "after": 17}  # 3 AC items x 2 judges, 2 MT items x 2 turns x 2 judges, 3 JMMLU
    for side in ("before", "after"):
        ds = _load(result.folder, side)
        assert ds.features == details_features()
        rows = ds.to_list()
        assert {r["label"] for r in rows} == {side} and len(rows) == result.rows[side]
        mt = [r for r in rows if r["benchmark"] == "MT-Bench-ja" and r["item"] == "11"]
        assert {(r["turn"], r["prompt"], r["reference"]) for r in mt} == {
            (1, "三角形の頂点が(0,0)、(-1,1)、(3,3)のとき面積は？", "面積は3です。"), (2, "外接円の面積は？", "外接円の面積は5πです。")}
        assert {r["score"] for r in mt} == {7.0} and {r["judge"] for r in mt} == {"judge-a", "judge-b"}
        ac = [r for r in rows if r["benchmark"] == "AnswerCarefully"]
        assert len(ac) == 6 and all(r["prompt"] is None and r["reference"] is None for r in ac)
        bad = [r for r in ac if r["unparseable"]]
        assert len(bad) == 1 and bad[0]["judge"] == "judge-b" and bad[0]["score"] is None and bad[0]["judge_attempts"] == 3
        assert bad[0]["judge_output"] == f"参照回答は「{REMOVED}」なので…"
        good = next(r for r in ac if not r["unparseable"])
        assert good["score"] == 4.0 and good["judge_output"].endswith("[[4]]") and good["answer"].startswith(f"{side}の回答: 「")
        jmmlu = [r for r in rows if r["benchmark"] == "JMMLU"]
        assert len(jmmlu) == 3 and {(r["judge"], r["chosen"], r["unparseable"]) for r in jmmlu} == {(None, "A", False)}
        first = rows[0]
        assert first["engine"] == {"engine": None, "path": None, "url": "http://gpu01:8000/v1", "served_model": f"served-{side}"}
        assert first["sampling"]["temperature"] == 0.0 and first["sampling"]["enable_thinking"] is True
        assert first["finish_reason"] == "stop" and first["usage"]["total_tokens"] == 15
    # the default config is the tuned model's
    assert _load(result.folder, None).num_rows == result.rows["after"]


def test_the_card_says_what_it_is(built):
    result, _, _ = built
    text = (result.folder / "README.md").read_text("utf-8")
    for needed in ("Tiny-Safety", "非公開", "private", "access on request", "demo/Tiny-Safety-eval-details",
                   "config_name: before", "answer-carefully-dataset-tou", "`ID`"):
        assert needed in text, needed
    marker = json.loads((result.folder / DETAILS_MARKER).read_text())
    assert marker["kind"] == "details" and marker["model"] == "Tiny-Safety" and marker["rows"] == 34


def _all_text(folder: Path) -> str:
    """Every file of the folder as text: the card and marker as read, the Parquet files' cells as JSON."""
    import pyarrow.parquet as pq

    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False))
            parts.append(path.read_bytes().decode("utf-8", "replace"))
        else:
            parts.append(path.read_text("utf-8"))
    return "\n".join(parts)


def test_no_answercarefully_text_nor_a_key_in_any_file(built):
    result, items, _ = built
    text = _all_text(result.folder)
    ac = [i for i in items.values() if i.benchmark == "AnswerCarefully"]
    for item in ac:
        for source in (*item.turns, *item.reference):
            windows = {source[i:i + 8] for i in range(len(source) - 7)}
            assert not [w for w in windows if w in text], source
    assert "hunter2" not in text and "sk-hidden" not in text and "user:" not in text


def test_rebuild_is_byte_identical(built, tmp_path):
    result, items, (responses, judgements) = built
    before = {p.relative_to(result.folder): p.read_bytes() for p in result.folder.rglob("*") if p.is_file()}
    again = build_details("Tiny-Safety", responses, judgements, tmp_path / "again", items=items,
                          repo_id="demo/Tiny-Safety-eval-details", model_repo="demo/Tiny-Safety", verify=False)
    after = {p.relative_to(again.folder): p.read_bytes() for p in again.folder.rglob("*") if p.is_file()}
    assert after == before and len(before) == 4  # README.md, two Parquet files, the marker


def test_a_judgement_without_its_response_is_an_error(built, tmp_path):
    _, _, (responses, judgements) = built
    with pytest.raises(InputError, match="has no response"):
        build_details("Tiny-Safety", responses[:1], judgements, tmp_path / "x", verify=False)
    assert not (tmp_path / "x").exists()


def test_every_benchmark_says_whether_it_may_be_redistributed():
    for name in spec_names():
        assert isinstance(load_spec(name).source.get("redistribute"), bool), name
    assert not load_spec("AnswerCarefully").redistribute and load_spec("MT-Bench-ja").redistribute


def test_the_answer_keys_lines_repeated_in_each_judges_file_make_one_row_but_a_contradiction_is_an_error(built, tmp_path):
    _, _, (responses, judgements) = built
    keyed = [p for p in judgements if p.name.endswith("-key.jsonl")]
    twice = build_details("Tiny-Safety", responses, [*judgements, *keyed], tmp_path / "twice", verify=False)
    assert twice.rows == {"before": 17, "after": 17}
    other = tmp_path / "judgements-after-judge-a-again.jsonl"
    source = next(p for p in judgements if p.name == "judgements-after-judge-a.jsonl")
    other.write_text(source.read_text("utf-8").replace('"score": 4', '"score": 2'), "utf-8")
    with pytest.raises(InputError, match="judged twice by judge-a, differently"):
        build_details("Tiny-Safety", responses, [*judgements, other], tmp_path / "bad", verify=False)
