"""``apto-release release``: every stage of a release, in order, resumable.

Each (stage, target) is a *job*; its inputs and outputs are hashed into the state file, so a re-run
skips a job whose inputs are the same and whose outputs are intact, and says why it runs one that is
not. Push always plans against the Hub. How resuming, killed runs and byte-identical rebuilds work:
docs/release-pipeline.md.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apto_release import __version__
from apto_release.cards.model import CARD_ASSETS, CARD_NAME
from apto_release.errors import AptoError, UsageError
from apto_release.io import folder_files
from apto_release.release.artifacts import (
    adapter_files,
    details_files,
    folder_digest,
    gguf_files,
    json_safe,
    manifest_commit,
    manifest_year,
    merged_files,
    target_files,
    templates_digest,
    total_size,
)
from apto_release.release.manifest import Manifest, ModelTarget
from apto_release.release.state import ReleaseState, changed_inputs, changed_outputs, digest

STAGES = ("validate", "sample", "dataset", "train", "merge", "imatrix", "gguf", "eval", "cards", "push")
STAGE_TITLES = {
    "validate": "validate", "sample": "sample", "dataset": "dataset build", "train": "train", "merge": "merge",
    "imatrix": "imatrix", "gguf": "GGUF convert + verify", "eval": "eval", "cards": "cards", "push": "push",
}


@dataclass
class Job:
    """One stage of one target: how to hash its inputs, run it and list what it wrote."""

    stage: str
    target: str
    inputs: Callable[[], dict[str, Any]]
    run: Callable[[ReleaseContext], str]  # does the work; returns a one-line summary
    outputs: Callable[[], list[Path]]
    deps: tuple[str, ...] = ()  # keys of the jobs whose outputs this one reads
    always: bool = False  # push: its output is remote, so it always compares with it

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.target}"


@dataclass
class JobReport:
    """What happened to one job: for the progress lines and the final table."""

    stage: str
    target: str
    status: str  # "done", "up to date", "failed"; in a dry run "would run" or "planned" (the push's plan)
    reason: str = ""
    seconds: float = 0.0
    summary: str = ""
    output_bytes: int = 0

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.target}"


@dataclass
class ReleaseResult:
    manifest: Manifest
    reports: list[JobReport] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.reports)


@dataclass
class ReleaseContext:
    """What a running job gets: the state (for cached hashes), the progress reporter, the Hub client."""

    manifest: Manifest
    state: ReleaseState
    progress: Any
    api: Any = None
    dry_run: bool = False
    #: The push's tokens: Trusted Publishing (True), the one token (False), or as hub.tokens decides (None).
    trusted_publishing: bool | None = None
    #: The job's previous unfinished run had the same inputs (training resumes from checkpoints).
    resuming: bool = False
    #: Set by a job whose report is not plain "done" (a push that found nothing to commit).
    status: str | None = None


class ReleaseError(AptoError, RuntimeError):
    """A stage failed; ``result`` holds the reports up to it (the CLI prints the table)."""

    def __init__(self, message: str, *, result: ReleaseResult, cause: AptoError | None = None) -> None:
        super().__init__(message, path=cause.path if cause else None, line=cause.line if cause else None,
                         field=cause.field if cause else None, hint=cause.hint if cause else None)
        self.result = result
        if cause is not None:
            self.exit_code = cause.exit_code


# ---------------------------------------------------------------------------------------------
# The jobs


class _Plan:
    """Builds the jobs of a manifest. Each stage is a method; the job functions close over the target."""

    def __init__(self, manifest: Manifest, state: ReleaseState) -> None:
        self.m = manifest
        self.state = state
        self._bases: dict[str, Path] = {}
        self.root = manifest.path.resolve().parent
        self.state_dir = manifest.state_file.parent

    @functools.cached_property
    def commit(self) -> str:
        """The manifest's commit (``manifest_commit``), asked of git once per run: every card names it."""
        return manifest_commit(self.m)

    @functools.cached_property
    def year(self) -> int | None:
        """The year the cards' citations give (``manifest_year``; None: the current year)."""
        return manifest_year(self.m)

    def _data(self):
        if self.m.data is None:
            raise UsageError("the manifest has no [data] table: the release command needs the records to validate, sample, "
                             "build and train on", path=self.m.path, hint='add [data] with records = "data/records.jsonl"')
        return self.m.data

    def _records_sha(self) -> str:
        data = self._data()
        if not data.records.is_file():
            raise UsageError("the records file does not exist", path=data.records, hint="fix [data] records in the manifest")
        return self.state.sha256(data.records)

    def _sha(self, path: Path, stage: str) -> str:
        """An earlier stage's output file's SHA-256, or an error saying which stage makes it."""
        if not path.is_file():
            raise UsageError(f"{path.name} does not exist yet", path=path, hint=f"run the {stage} stage first (--stages {stage})")
        return self.state.sha256(path)

    def output_folders(self) -> set[Path]:
        """Every folder the release writes into, and the folders that hold them: where a killed run
        can have left temporary files or folders."""
        folders = {self.state_dir}
        if self.m.data is not None:
            folders.add(self.m.data.sample_folder)
        folders.update(target.folder for target in self.m.datasets.values())
        for model in self.m.models:
            folders.update((model.adapter, model.merged, model.gguf_folder, self.imatrix_folder(model)))
            if model.eval and model.evaluation:
                folders.update((model.evaluation.parent, self.state_dir / "eval" / model.name))
        return folders | {folder.parent for folder in folders}

    def jobs(self) -> list[Job]:
        jobs = [self.validate(), self.sample()]
        jobs += [self.dataset(key) for key in ("sample", "full") if key in self.m.datasets]
        for model in self.m.models:
            jobs += [self.train(model), self.merge(model)]
            if model.gguf and model.gguf_imatrix:
                jobs.append(self.imatrix(model))
            if model.gguf:
                jobs.append(self.gguf(model))
            if model.eval:
                jobs.append(self.evaluate(model))
            jobs.append(self.cards(model))
        jobs += [self.push(name) for name in self.m.target_names()]
        return jobs

    # -- the dataset ----------------------------------------------------------------------------

    def validate(self) -> Job:
        report_path = self.state_dir / "validation.json"

        def inputs():
            return {"records": self._records_sha(), "expected_count": self._data().expected_count}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.dataset.validate import ValidateOptions, validate_file
            from apto_release.errors import ValidationFailed
            from apto_release.io import write_json

            data = self._data()
            with ctx.progress.task("validate", total=None, unit="record"):
                report = validate_file(data.records, ValidateOptions(expected_count=data.expected_count)).report
            write_json(report_path, report.to_dict())
            if not report.ok:
                raise ValidationFailed(f"{report.failure_summary()}; the full report is in {report_path}", path=data.records, report=report)
            return f"{report.records:,} records, {report.status}" + (f" ({len(report.warnings)} warnings)" if report.warnings else "")

        return Job("validate", "data", inputs, run, lambda: [report_path])

    def sample(self) -> Job:
        def inputs():
            data = self._data()
            return {"records": self._records_sha(), "sample_size": data.sample_size, "seed": data.seed}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.dataset.sample import SampleOptions, sample_file
            from apto_release.dataset.validate import ValidateOptions

            data = self._data()
            # The validate stage has checked the whole set, near duplicates included.
            result = sample_file(data.records, data.sample_folder, SampleOptions(n=data.sample_size, seed=data.seed),
                                 ValidateOptions(expected_count=data.expected_count, near_duplicates=False), overwrite=True)
            r = result.report
            return f"{r.sample_count} of {r.full_count:,}; largest difference {r.max_abs_diff_points:.2f} points"

        def outputs():
            folder = self._data().sample_folder
            return target_files(folder) if folder.is_dir() else []

        return Job("sample", "data", inputs, run, outputs, deps=("validate:data",))

    def _card_options(self, key: str):
        import dataclasses

        from apto_release.dataset.build import CardOptions

        target = self.m.datasets[key]
        name = target.pretty_name or target.repo.split("/", 1)[1].replace("-", " ")
        provenance = (("records file SHA-256", self._records_sha()), ("apto-release", __version__),
                      (f"manifest ({self.m.path.name}) SHA-256", self.state.sha256(self.m.path)),
                      ("manifest git commit", self.commit))
        options = CardOptions(repo_id=target.repo, pretty_name=name, license=self._data().license, version=self.m.version,
                              provenance=provenance, citation_year=self.year)
        if not target.gated:
            options = dataclasses.replace(options, gated_prompt=None, gated_fields={})
        return options

    def dataset(self, key: str) -> Job:
        from apto_release.dataset.sample import DISTRIBUTION_JSON, SAMPLE_JSONL

        target = self.m.datasets[key]
        sample_file_path = lambda: self._data().sample_folder / SAMPLE_JSONL  # noqa: E731
        distribution_path = lambda: self._data().sample_folder / DISTRIBUTION_JSON  # noqa: E731

        def inputs():
            card = repr(self._card_options(key))
            if key == "sample":
                return {"sample": self._sha(sample_file_path(), "sample"), "distribution": self._sha(distribution_path(), "sample"), "card": card}
            return {"records": self._records_sha(), "card": card}

        def run(ctx: ReleaseContext) -> str:
            import json

            from apto_release.dataset.build import build_dataset
            from apto_release.dataset.validate import ValidateOptions, load_valid_records

            # Whatever the selected stages, nothing is built from records that fail validation (as in
            # 'dataset build'); near duplicates are warnings, left to the validate stage.
            source = sample_file_path() if key == "sample" else self._data().records
            valid = load_valid_records(source, ValidateOptions(near_duplicates=False), purpose="building the dataset")
            distribution = json.loads(distribution_path().read_text("utf-8")) if key == "sample" else None
            result = build_dataset(valid.values, target.folder, options=self._card_options(key), distribution=distribution,
                                   overwrite=True, marker=True, source=valid)
            return f"{result.rows:,} rows, configs {', '.join(result.configs)}; loaded back with datasets"

        deps = ("sample:data",) if key == "sample" else ("validate:data",)
        return Job("dataset", f"dataset.{key}", inputs, run, lambda: target_files(target.folder) if target.folder.is_dir() else [], deps)

    # -- the models -----------------------------------------------------------------------------

    def _base_folder(self, model: ModelTarget) -> Path:
        """The base checkpoint's local folder: the manifest's ``base``, or the Hub snapshot of
        ``base_model`` (looked up once per run: train and merge both need it, twice each)."""
        if model.base != model.base_model:
            return Path(model.base)
        if model.base_model not in self._bases:
            self._bases[model.base_model] = self._download_base(model)
        return self._bases[model.base_model]

    def _download_base(self, model: ModelTarget) -> Path:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(snapshot_download(model.base_model))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise UsageError(f"cannot get the base model {model.base_model} from the Hub: {str(exc).splitlines()[0]}", path=self.m.path,
                             hint=f"download it (hf download {model.base_model} --local-dir DIR) and set base = \"DIR\" for {model.name}") from None

    def _base_digest(self, model: ModelTarget) -> str:
        folder = self._base_folder(model)
        if not folder.is_dir():
            raise UsageError(f"the base checkpoint of {model.name} is not a folder", path=folder, hint="fix the model's base in the manifest")
        return folder_digest(self.state, target_files(folder, exclude=(CARD_NAME,), published=False), folder, "base checkpoint")

    def _train_config(self, model: ModelTarget):
        from apto_release.train.presets import load_preset

        preset = self.root / model.preset if model.preset.endswith(".toml") else model.preset
        return load_preset(preset, dict(model.train.overrides))

    def train(self, model: ModelTarget) -> Job:
        def inputs():
            import hashlib
            import json

            config = json.dumps(self._train_config(model).flat(), sort_keys=True, default=str)
            return {
                "records": self._records_sha(), "base": self._base_digest(model), "base_model": model.base_model,
                "config": hashlib.sha256(config.encode()).hexdigest(), "max_steps": model.train.max_steps,
            }

        def run(ctx: ReleaseContext) -> str:
            import shutil

            from apto_release.train.trainer import checkpoint_dir, latest_checkpoint, train

            checkpoints = checkpoint_dir(model.adapter)
            if not ctx.resuming:
                shutil.rmtree(checkpoints, ignore_errors=True)  # another run's: not ours to continue
            # A checkpoint the kill caught half-written is removed; with none complete, start over.
            resume = ctx.resuming and latest_checkpoint(checkpoints) is not None
            with ctx.progress.task(f"train {model.name}", total=model.train.max_steps, unit="step") as task:
                result = train(
                    self._train_config(model), base=str(self._base_folder(model)), data=self._data().records, out_dir=model.adapter,
                    resume=resume, overwrite=True, max_steps=model.train.max_steps, save_steps=model.train.save_steps,
                    base_model_id=model.base_model, on_step=task.update, allow_slow_kernels=model.train.allow_slow_kernels,
                )
            loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
            resumed = f" (resumed from step {result.steps - result.steps_trained})" if result.resumed_from else ""
            return f"{result.steps} steps{resumed}, final loss {loss}"

        return Job("train", model.name, inputs, run, lambda: adapter_files(model, reports=True), deps=("validate:data",))

    def merge(self, model: ModelTarget) -> Job:
        def inputs():
            return {"adapter": folder_digest(self.state, adapter_files(model), model.adapter, "adapter"), "base": self._base_digest(model)}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.merge.merge import merge

            with ctx.progress.task(f"merge {model.name}", unit="B") as task:
                result = merge(self._base_folder(model), model.adapter, model.merged, overwrite=True, on_bytes=task.update)
            return f"{result.tensors_merged:,} tensors merged, {result.shards_written} shards"

        return Job("merge", model.name, inputs, run, lambda: merged_files(model), deps=(f"train:{model.name}",))

    def _gguf_metadata(self, model: ModelTarget) -> dict[str, Any]:
        from apto_release.cards.context import COMMON_TAGS, public_datasets

        return {
            "version": self.m.version, "license": self.m.license, "base_model": [model.base_model],
            "tags": list(COMMON_TAGS), "languages": ["ja", "en"], "datasets": public_datasets(self.m),
            "quantized_by": self.m.organisation,
        }

    def imatrix_folder(self, model: ModelTarget) -> Path:
        """Where the imatrix job writes (the gguf job copies imatrix.gguf and calibration.txt from there)."""
        return self.state_dir / "imatrix" / model.name

    def _imatrix_paths(self, model: ModelTarget) -> tuple[Path, Path, Path]:
        folder = self.imatrix_folder(model)
        return folder / "imatrix.gguf", folder / "calibration.txt", folder / "imatrix.json"  # gguf.imatrix's names

    def imatrix(self, model: ModelTarget) -> Job:
        """The importance matrix, from the merged checkpoint's F16/BF16 file over the calibration text (docs/release-pipeline.md)."""
        options = model.gguf_imatrix
        calibration = lambda: self._data().records if options.calibration == "auto" else Path(options.calibration)  # noqa: E731

        def inputs():
            if not calibration().is_file():
                raise UsageError("the calibration file does not exist", path=calibration(), hint=f"fix gguf_imatrix of {model.name}")
            return {"merged": folder_digest(self.state, merged_files(model), model.merged, "merged checkpoint"),
                    "calibration": {"file": calibration().name, "sha256": self.state.sha256(calibration())},
                    "against": [self._sha(p, "imatrix") for p in options.against],
                    "general": self._sha(options.general, "imatrix") if options.general else None, "toolkit": __version__}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.gguf.build import imatrix_for_checkpoint
            from apto_release.io import write_json

            record = self._imatrix_paths(model)[2]
            with ctx.progress.task(f"imatrix {model.name}", total=None, unit="step"):
                made = imatrix_for_checkpoint(model.merged, record.parent, calibration(), name=model.name,
                                              calibration_against=options.against, calibration_general=options.general)
            write_json(record, made)  # last: the gguf job reads it with the two files it describes
            return f"{made['chunks']} chunks over {made['calibration'].get('tokens', 0):,} calibration tokens"

        return Job("imatrix", model.name, inputs, run, lambda: [p for p in self._imatrix_paths(model) if p.is_file()],
                   deps=(f"merge:{model.name}",))

    def gguf(self, model: ModelTarget) -> Job:
        def inputs():
            found = {"merged": folder_digest(self.state, merged_files(model), model.merged, "merged checkpoint"),
                     "types": list(model.gguf), "metadata": self._gguf_metadata(model), "verify": model.gguf_verify}
            if model.gguf_imatrix:
                found["imatrix"] = [self._sha(p, "imatrix") for p in self._imatrix_paths(model)]
            if model.gguf_mmproj != "F16":  # the default leaves the digest of earlier releases as it was
                found["mmproj"] = model.gguf_mmproj or "none"
            return found

        def run(ctx: ReleaseContext) -> str:
            import json

            from apto_release.gguf.build import build_gguf

            extra: dict[str, Any] = {}
            if model.gguf_imatrix:
                imatrix, text, record = self._imatrix_paths(model)
                extra = {"imatrix": imatrix, "calibration": text, "imatrix_made": json.loads(record.read_text("utf-8"))}
            files = build_gguf(model.merged, model.gguf_folder, list(model.gguf), name=model.name, overwrite=True, mmproj=model.gguf_mmproj,
                               verify=model.gguf_verify, progress=ctx.progress, **extra, **self._gguf_metadata(model))
            failed = [f for f in files if not f.ok]
            if failed:
                from apto_release.errors import BuildError

                detail = "; ".join(f"{f.quant}: " + ", ".join(c.name for c in f.report.failed) for f in failed)
                raise BuildError(f"llama.cpp verification failed ({detail})", path=failed[0].path,
                                 hint=f"the files stay for inspection; see: apto-release gguf verify {failed[0].path} --reference {model.merged}")
            return ", ".join(f.quant for f in files) + (" written and verified in llama.cpp" if model.gguf_verify else " written (gguf_verify = false)")

        deps = (f"merge:{model.name}",) + ((f"imatrix:{model.name}",) if model.gguf_imatrix else ())
        return Job("gguf", model.name, inputs, run, lambda: gguf_files(model), deps=deps)

    def _served_digest(self, path: Path) -> str:
        """A served model's digest: a file's SHA-256 or a checkpoint folder's digest."""
        if path.is_file():
            return self.state.sha256(path)
        if not path.is_dir():
            raise UsageError("the model to evaluate does not exist", path=path, hint="fix [model.eval] or run the stage that makes it")
        return folder_digest(self.state, target_files(path, exclude=(CARD_NAME, *CARD_ASSETS), published=False), path, "merged checkpoint")

    def _bench_digest(self, model: ModelTarget) -> dict[str, str]:
        """The benchmarks' data: the local copies' files, or the pinned Hub revision; with the
        package's benchmark data files and judge prompts (a changed prompt re-judges)."""
        import hashlib
        from importlib import resources

        from apto_release.evals.benchmarks import load_spec
        from apto_release.evals.generate import bench_folder

        out = {}
        for name in model.eval.benchmarks:
            folder = bench_folder(model.eval.bench_dir, name)
            if folder is None:
                spec = load_spec(name)
                out[name] = f"{spec.hub_id}@{spec.revision}"
            elif not folder.is_dir():
                raise UsageError(f"the local copy of {name} does not exist", path=folder, hint="fix bench_dir in [model.eval]")
            else:
                out[name] = digest(self.state.listing(folder_files(folder), folder))
        package = resources.files("apto_release.evals")
        data = hashlib.sha256()
        for sub in ("benchmark_data", "prompts"):
            for entry in sorted(package.joinpath(sub).iterdir(), key=lambda e: e.name):
                if entry.is_file():
                    data.update(entry.name.encode() + entry.read_bytes())
        out["package data"] = data.hexdigest()
        return out

    def evaluate(self, model: ModelTarget) -> Job:
        import dataclasses

        work = self.state_dir / "eval" / model.name
        written: list[Path] = []

        def base_folder() -> Path | None:
            spec = model.eval.base
            return self._base_folder(model) if spec.serve and spec.path is None else None

        def inputs():
            from apto_release.release.evaluate import eval_sides

            served = {label: self._served_digest(spec.path) if spec.serve else None
                      for label, spec in eval_sides(model, base_folder())}
            if not model.eval.tuned.serve and (merged := merged_files(model)):  # an engine by URL: the files it should serve
                served["after"] = digest(self.state.listing(merged, model.merged))
            # Where an engine answers (url, key) is not an input, as in the responses' own hashes:
            # what it serves (its model name) is. The demo's judge moves port from run to run.
            table = json_safe(dataclasses.asdict(model.eval))
            for engine in (table["base"], table["tuned"], *table["judges"]):
                engine.pop("url"), engine.pop("api_key_env")
            return {"eval": table, "models": served, "benchmarks": self._bench_digest(model),
                    "evaluation": str(model.evaluation), "toolkit": __version__}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.release.evaluate import evaluate_model

            with ctx.progress.task(f"eval {model.name}", total=None, unit="step") as task:
                done = evaluate_model(model, work, base_folder=base_folder(), progress=lambda _: task.advance())
            written[:] = [done.evaluation] + ([done.chart] if done.chart.is_file() else []) + details_files(model)
            return (f"{', '.join(done.labels)} evaluated ({done.asked:,} requests, {done.kept:,} kept); "
                    f"wrote {done.evaluation.name}")

        def outputs():
            from apto_release.evals.chart import CHART_NAME

            chart = model.evaluation.parent / CHART_NAME
            return written or [p for p in (model.evaluation, chart) if p.is_file()] + details_files(model)

        deps = (f"merge:{model.name}",) + ((f"gguf:{model.name}",) if model.gguf else ())
        return Job("eval", model.name, inputs, run, outputs, deps=deps)

    def _provenance(self, model: ModelTarget, kind: str) -> dict[str, str]:
        """The hashes a card names, so that a published file leads back to its inputs."""
        rows = {}  # the training data's hash comes from the training summary
        if adapter := adapter_files(model):
            rows["adapter SHA-256 (folder digest)"] = digest(self.state.listing(adapter, model.adapter))
        if merged := merged_files(model):
            rows["merged checkpoint SHA-256 (folder digest)"] = digest(self.state.listing(merged, model.merged))
        if kind != "adapter":
            from apto_release.gguf.output import existing_outputs

            for type_ in model.gguf:
                files = existing_outputs(model.gguf_folder, f"{model.name}-{type_}")
                if files:
                    rows[f"GGUF {type_} SHA-256" + (" (set digest)" if len(files) > 1 else "")] = (
                        self.state.sha256(files[0]) if len(files) == 1 else digest(self.state.listing(files, model.gguf_folder)))
        rows[f"manifest ({self.m.path.name}) SHA-256"] = self.state.sha256(self.m.path)
        rows["manifest git commit"] = self.commit
        return rows

    def cards(self, model: ModelTarget) -> Job:
        written: list[Path] = []

        def inputs():
            folders = {"adapter": folder_digest(self.state, adapter_files(model), model.adapter, "adapter"),
                       "merged": folder_digest(self.state, merged_files(model), model.merged, "merged checkpoint")}
            if model.gguf:
                folders["gguf"] = digest(self.state.listing(gguf_files(model), model.gguf_folder))
            evaluation = self.state.sha256(model.evaluation) if model.evaluation and model.evaluation.is_file() else None
            return {**folders, "evaluation": evaluation, "manifest": self.state.sha256(self.m.path),
                    "commit": self.commit, "toolkit": __version__, "templates": templates_digest()}

        def run(ctx: ReleaseContext) -> str:
            from apto_release.cards.model import build_cards, write_card

            cards = build_cards(self.m, only=[model.name], provenance=self._provenance, sha256=self.state.sha256, year=self.year)
            written.clear()
            for card in cards:
                written.append(write_card(card))
                written.extend(card.path.parent / name for name in card.assets)
            return ", ".join(f"{c.kind} card" for c in cards)

        deps = (f"train:{model.name}", f"merge:{model.name}") + ((f"gguf:{model.name}",) if model.gguf else ())
        deps += (f"eval:{model.name}",) if model.eval else ()
        return Job("cards", model.name, inputs, run, lambda: list(written), deps=deps)

    # -- the Hub --------------------------------------------------------------------------------

    def push(self, name: str) -> Job:
        def run(ctx: ReleaseContext) -> str:
            from apto_release.hub.push import push, summary_line

            # On a terminal the client draws the upload bars; in a log the task's lines say it is alive.
            with ctx.progress.task(f"push {name}", unit="repo") if not ctx.progress.bars else contextlib.nullcontext():
                results = push(self.m, only=[name], api=ctx.api, dry_run=ctx.dry_run, hasher=self.state.hash_file,
                               progress=ctx.progress.bars, trusted_publishing=ctx.trusted_publishing)
            if all(r.status == "unchanged" or r.status == "planned" and not r.plan.changed for r in results):
                ctx.status = "up to date"
            return "; ".join(summary_line(r) for r in results)

        deps = (f"dataset:{name}",) if name.startswith("dataset.") else (f"cards:{name}",)
        return Job("push", name, dict, run, list, deps=deps, always=True)


# ---------------------------------------------------------------------------------------------
# Running


def select_jobs(jobs: Sequence[Job], manifest: Manifest, *, stages: Iterable[str] = (), only: Iterable[str] = ()) -> list[Job]:
    """The jobs of the chosen stages and targets (all when empty), in order."""
    stages, only = list(dict.fromkeys(stages)), list(dict.fromkeys(only))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"--stages {', '.join(unknown)}: no such stage; the stages are {', '.join(STAGES)}")
    names = manifest.target_names()
    unknown = [n for n in only if n not in names and n != "data"]
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: not in the manifest; choose from data, {', '.join(names)}", path=manifest.path)
    return [j for j in jobs if (not stages or j.stage in stages) and (not only or j.target in only)]


def run_release(
    manifest: Manifest,
    *,
    stages: Iterable[str] = (),
    only: Iterable[str] = (),
    dry_run: bool = False,
    api=None,
    progress=None,
    on_report: Callable[[JobReport], None] | None = None,
    on_start: Callable[[Job, str], None] | None = None,
    trusted_publishing: bool | None = None,
) -> ReleaseResult:
    """Run (or, with ``dry_run``, plan) the release's jobs; see docs/release-pipeline.md.

    ``on_start(job, reason)`` is called before a job runs; ``on_report`` with each job's report.
    ``trusted_publishing``: the push's tokens (``hub.push.push``).

    Raises:
        ReleaseError: a job failed (its error is the message; ``result`` has the reports so far).
        UsageError: an unknown stage or target; a manifest without what a chosen stage needs.
    """
    if progress is None:
        from apto_release.progress import Progress

        progress = Progress.off()
    state = ReleaseState.load(manifest.state_file)
    plan = _Plan(manifest, state)
    jobs = select_jobs(plan.jobs(), manifest, stages=stages, only=only)
    if not dry_run:
        from apto_release.io import remove_stale_temps

        # What killed runs left (each temporary names its writer); a live parallel run's stay.
        for folder in sorted(plan.output_folders()):
            remove_stale_temps(folder)
    result = ReleaseResult(manifest, dry_run=dry_run)
    pending: set[str] = set()  # dry run: jobs that would run, whose outputs are not there yet
    root = manifest.path.resolve().parent

    def report(rep: JobReport) -> None:
        result.reports.append(rep)
        if on_report:
            on_report(rep)

    for job in jobs:
        waiting = [d for d in job.deps if d in pending]
        if dry_run and waiting:  # its inputs do not exist yet: no hashing, no remote plan
            if not job.always:
                pending.add(job.key)
            report(JobReport(job.stage, job.target, "would run", f"after {', '.join(waiting)}"))
            continue
        try:
            inputs = job.inputs()
            record = state.stages.get(job.key)
            reason = None
            if job.always:
                reason = "compares with the Hub"
            elif record is None:
                reason = "not run before" if job.key not in state.running else "did not finish last time"
            else:
                reason = changed_inputs(record.inputs, inputs) or changed_outputs(record, root, state)
            if reason is None:
                report(JobReport(job.stage, job.target, "up to date", "inputs unchanged, outputs intact",
                                 summary=record.summary, output_bytes=total_size(root / n for n in record.outputs)))
                continue
            if dry_run and not job.always:
                pending.add(job.key)
                report(JobReport(job.stage, job.target, "would run", reason))
                continue
            context = ReleaseContext(manifest, state, progress, api=api, dry_run=dry_run,
                                     resuming=state.running.get(job.key) == inputs, trusted_publishing=trusted_publishing)
            if on_start:
                on_start(job, reason)
            if not job.always:
                state.start(job.key, inputs)
            started = time.perf_counter()
            summary = job.run(context)
            seconds = time.perf_counter() - started
            written = job.outputs()
            if not job.always:
                state.finish(job.key, inputs, state.listing(written, root), seconds=seconds, summary=summary)
            status = context.status or ("planned" if dry_run else "done")
            report(JobReport(job.stage, job.target, status, reason, seconds, summary, total_size(written)))
        except AptoError as exc:
            report(JobReport(job.stage, job.target, "failed", str(exc)))
            if not dry_run:
                state.save()
            raise ReleaseError(f"{STAGE_TITLES[job.stage]} of {job.target} failed: {exc.message}", result=result, cause=exc) from exc
    if not dry_run:  # a dry run writes nothing, not even the hash cache
        state.forget_missing()
        state.save()
    return result
