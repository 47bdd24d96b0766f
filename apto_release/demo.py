"""``demo``: the whole release pipeline on bundled synthetic data, on one laptop, in minutes.

For now it runs the dataset side: generate the example data, validate it, draw the public sample,
build the Hub dataset folder and load it back with ``datasets``. Later stages join as they land.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DemoStep:
    name: str
    seconds: float
    summary: str
    outputs: list[Path] = field(default_factory=list)


@dataclass
class DemoResult:
    out_dir: Path
    steps: list[DemoStep]
    ok: bool


def run_demo(
    out_dir: str | Path,
    *,
    records: int = 18000,
    sample_size: int = 500,
    seed: int = 0,
    on_step: Callable[[DemoStep], None] | None = None,
) -> DemoResult:
    """Run the pipeline into ``out_dir`` (replacing what an earlier demo left there)."""
    from apto_release.dataset.build import CardOptions, build_dataset
    from apto_release.dataset.example import write_example_data
    from apto_release.dataset.sample import SampleOptions, sample_file
    from apto_release.dataset.validate import ValidateOptions, validate_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps: list[DemoStep] = []

    def step(name: str, action: Callable[[], tuple[str, list[Path]]]) -> None:
        start = time.perf_counter()
        summary, outputs = action()
        steps.append(DemoStep(name, time.perf_counter() - start, summary, outputs))
        if on_step:
            on_step(steps[-1])

    data = out_dir / "example.jsonl"
    step("example-data", lambda: (f"{write_example_data(data, n=records, seed=seed).count:,} synthetic records", [data]))

    report_holder = {}

    def validate():
        report = validate_file(data, ValidateOptions(expected_count=records)).report
        report_holder["report"] = report
        return f"{report.status}: {len(report.errors)} errors, {len(report.warnings)} warnings", []

    step("validate", validate)
    if not report_holder["report"].ok:
        return DemoResult(out_dir, steps, ok=False)

    sample_dir = out_dir / "sample"

    def sample():
        result = sample_file(data, sample_dir, SampleOptions(n=sample_size, seed=seed), overwrite=True)
        r = result.report
        return (
            f"{r['sample_count']} of {r['full_count']:,}; largest difference {r['max_abs_diff_points']:.2f} points, "
            f"TVD {r['total_variation_distance']:.4f}",
            result.files,
        )

    step("sample", sample)

    dataset_dir = out_dir / "dataset"

    def build():
        import json

        sample_records = [json.loads(line) for line in (sample_dir / "sample.jsonl").read_text("utf-8").splitlines()]
        distribution = json.loads((sample_dir / "distribution.json").read_text("utf-8"))
        result = build_dataset(sample_records, dataset_dir, options=CardOptions(), distribution=distribution, overwrite=True, marker=True)
        return f"{result.rows} rows, configs {', '.join(result.configs)}; loaded back with datasets", [dataset_dir]

    step("dataset build", build)
    return DemoResult(out_dir, steps, ok=True)
