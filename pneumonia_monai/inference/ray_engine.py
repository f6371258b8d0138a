"""The Ray Data engine of ``pneumonia-monai infer --engine ray``: the same run, its films scored on a cluster.

The run is the local engine's (:class:`pneumonia_monai.inference.runner._Run`): the same inputs and
manifest, journal, resume, duplicate SOP Instance UID rule, SRs, FHIR Bundles and results files. Only the
middle differs: instead of threads of this process, the films not reusable from an earlier run go through
a Ray Dataset, ``map_batches`` over an actor pool (:class:`ray.data.ActorPoolStrategy`) of
:class:`FilmScorer`, each of which loads the bundle once and runs the shared per-film step
(:mod:`pneumonia_monai.inference.film_step`: triage, decoding and preprocessing, the model on the batch,
Grad-CAM heatmaps when asked) and hands back one result row per film. Ray Data streams with
backpressure, so memory stays bounded whatever the number of files; rows hold no pixels.

Exactly once: Ray restarts a dead actor and retries its batch (``max_restarts`` and ``max_task_retries``
are unlimited for Ray Data actors). What an actor writes is named by content (a heatmap by the film's
relative path, its Secondary Capture by SOP Instance UID, a fetched entry by the SHA-256 of its URI) and
written atomically, so a retried batch rewrites the same files; rows are taken once per file index here,
whatever Ray delivers, and go through the journal as in the local engine, so a rerun resumes.

Ray is optional (``pip install .[ray]``). The driver connects to ``ray_address`` (``auto``: a running
cluster, ``ray://HOST:10001``: a remote one) or starts a local Ray with this machine's CPUs, and shuts
down only a Ray it started. On a cluster the output folder (and local inputs) must be on storage every
node sees (NFS, EFS); inputs can be given as object-store URIs in a manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumonia_monai import checks
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.inference.film_step import FilmContext, FilmItem, FilmJob
from pneumonia_monai.inference.journal import StateEntry
from pneumonia_monai.inference.manifest import OK, ResultRow
from pneumonia_monai.inference.outputs import HEATMAP_DIR, RunOutputs, heatmap_png_name
from pneumonia_monai.inference.runner import RunSummary, _Run
from pneumonia_monai.site_overlay import SiteOperatingPoint

logger = logging.getLogger(__name__)

#: Jobs per block of the input dataset (many blocks per actor keep the pool busy and memory small).
JOBS_PER_BLOCK = 64


class RayEngineError(RuntimeError):
    """Ray could not be reached or the actor pool failed; the rows taken so far are in the journal."""


@dataclass(frozen=True)
class ActorSpec:
    """What every :class:`FilmScorer` needs to rebuild the driver's run (pickled to the actors).

    Attributes:
        bundle_root: the bundle folder.
        device: where the network runs in the actor (``cpu``, ``cuda``, ``auto``).
        variant, full_decode, precision: as for :func:`~pneumonia_monai.inference.bundle.load_bundle`.
        site: the site operating point, if any.
        rules: the selection rules.
        out: the output folder (heatmaps are written there).
        heatmaps: write Grad-CAM heatmaps.
        fingerprint: the driver's bundle fingerprint; an actor that loads other weights refuses to run.
    """

    bundle_root: str
    device: str
    variant: str | None
    full_decode: bool
    precision: str | None
    site: SiteOperatingPoint | None
    rules: SelectionRules
    out: str
    heatmaps: bool
    fingerprint: str


class FilmScorer:
    """A Ray Data actor: the bundle loaded once, the per-film step run on each batch of jobs."""

    def __init__(self, spec: ActorSpec) -> None:
        from pneumonia_monai.inference.bundle import load_bundle
        from pneumonia_monai.site_overlay import apply_site

        bundle = apply_site(
            load_bundle(
                spec.bundle_root,
                device=spec.device,
                variant=spec.variant,
                full_decode=spec.full_decode,
                precision=spec.precision,
            ),
            spec.site,
        )
        if bundle.fingerprint != spec.fingerprint:
            raise RuntimeError(
                f"the bundle at {spec.bundle_root} on this worker is not the driver's "
                "(other weights or settings): install the same bundle on every node"
            )
        self.spec = spec
        self.context = FilmContext(bundle, spec.rules)
        # The driver's output writers, for the heatmaps (the summary only counts this actor's failures).
        self.summary = RunSummary(
            counts={}, images_per_second=0.0, results_csv=Path(), results_json=Path(), studies_csv=Path()
        )
        self.outputs = RunOutputs(
            bundle,
            spec.rules,
            Path(spec.out),
            self.summary,
            fingerprint=spec.fingerprint,
            heatmaps=spec.heatmaps,
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Score one batch of jobs (columns of :func:`_jobs_table`); return one row per job."""
        jobs = [
            FilmJob(
                int(index), Path(_text(path)), Path(_text(root)), _text(rel), str(key), str(uri), _text(stem)
            )
            for index, path, root, rel, key, uri, stem in zip(
                batch["index"],
                batch["path"],
                batch["root"],
                batch["rel"],
                batch["key"],
                batch["uri"],
                batch["stem"],
                strict=True,
            )
        ]
        items = [self.context.prepare(job) for job in jobs]
        pending = [item for item in items if item.row is None]
        rows: dict[int, ResultRow] = {item.job.index: item.row for item in items if item.row is not None}
        heatmaps = dict.fromkeys(rows, False)
        failed = dict.fromkeys(rows, False)
        scored = dict.fromkeys(rows, False)
        if pending:
            try:
                ok_rows, probs = self.context.score(pending)
            except (RuntimeError, ValueError) as exc:  # out of device memory, say: retried by the next run
                ok_rows, probs = self.context.failed(pending, exc), None
            for number, (item, row) in enumerate(zip(pending, ok_rows, strict=True)):
                index = item.job.index
                rows[index], scored[index], failed[index], heatmaps[index] = (
                    row,
                    probs is not None,
                    False,
                    False,
                )
                if probs is not None and self.spec.heatmaps:
                    failures = self.summary.output_failures
                    heatmaps[index] = self.outputs.write_heatmap(item, probs[number], row)
                    failed[index] = self.summary.output_failures > failures
                item.image = item.cam = None  # no pixels are kept past this point
        order = [job.index for job in jobs]
        return {
            "index": order,
            "row": [json.dumps(rows[i].to_state(), allow_nan=False) for i in order],
            "heatmaps": [heatmaps[i] for i in order],
            "scored": [scored[i] for i in order],
            "output_failed": [failed[i] for i in order],
        }


def _jobs_table(jobs: list[FilmJob]) -> Any:
    """The jobs as an Arrow table of the columns :meth:`FilmScorer.__call__` reads."""
    import pyarrow as pa

    def text(values: list[str]) -> Any:  # paths that are not UTF-8 travel losslessly
        return pa.array([value.encode("utf-8", "surrogateescape") for value in values], pa.binary())

    return pa.table(
        {
            "index": pa.array([job.index for job in jobs], pa.int64()),
            "path": text([str(job.path) for job in jobs]),
            "root": text([str(job.root) for job in jobs]),
            "rel": text([job.rel for job in jobs]),
            "key": pa.array([job.key for job in jobs], pa.string()),
            "uri": pa.array([job.uri for job in jobs], pa.string()),
            "stem": text([job.output_name for job in jobs]),  # the driver's output names
        }
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


@contextmanager
def ray_session(address: str | None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray (``address``), or start a local one; shut down only a Ray started here.

    Raises:
        ValueError: if Ray is not installed (``pip install .[ray]``).
        RayEngineError: if Ray cannot be started or joined.
    """
    try:
        import ray
    except ImportError as exc:
        raise ValueError("engine 'ray' needs Ray: pip install 'pneumonia-monai[ray]'") from exc
    started = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address, num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayEngineError(
                f"cannot start or join Ray at {address or 'a new local Ray'}: {exc}"
            ) from exc
        started = True
    elif address is not None:
        logger.info("Ray is already initialised in this process: --ray-address %s not used", address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class RayRun(_Run):
    """The local engine's run with its films scored by a Ray Data actor pool.

    Args:
        *args: as for :class:`~pneumonia_monai.inference.runner._Run`.
        spec: what the actors load (:class:`ActorSpec`).
        actors: the actor pool's size (default: the cluster's CPUs divided by ``cpus_per_actor``).
        cpus_per_actor: CPUs reserved per actor (the forward's threads).
        gpus_per_actor: GPUs reserved per actor (0 on CPUs).
        **kwargs: as for :class:`~pneumonia_monai.inference.runner._Run`.
    """

    def __init__(
        self,
        *args: Any,
        spec: ActorSpec,
        actors: int | None = None,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if actors is not None:
            checks.positive_int("actors", actors)
        if not cpus_per_actor > 0:
            raise ValueError(f"cpus_per_actor must be positive, got {cpus_per_actor!r}")
        if not gpus_per_actor >= 0:
            raise ValueError(f"gpus_per_actor must not be negative, got {gpus_per_actor!r}")
        self.spec = spec
        self.actors = actors
        self.cpus_per_actor = float(cpus_per_actor)
        self.gpus_per_actor = float(gpus_per_actor)

    def _pool_size(self) -> int:
        import ray

        if self.actors is not None:
            return self.actors
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.cpus_per_actor))

    def _stream(self, jobs: list[FilmJob], previous: dict[str, StateEntry]) -> None:
        """Score the files not reusable in the actor pool; take every row in input order, once."""
        import ray

        todo: list[FilmJob] = []
        ready: dict[int, FilmItem] = {}
        for job in jobs:
            entry = previous.get(job.key)
            if self._reusable(job, entry):
                ready[job.index] = FilmItem(job, row=entry.row, reused=entry)  # type: ignore[union-attr]
            else:
                todo.append(job)
        taken: set[int] = set(ready)
        cursor = 0

        def drain() -> None:  # rows go to the run in input order (the duplicate SOP rule needs it)
            nonlocal cursor
            while cursor in ready:
                item = ready.pop(cursor)
                self._consume(item, [])
                row = self.rows[cursor]
                if item.heatmaps and row is not None and row.status != OK:
                    # A later file of a SOP Instance UID, scored by an actor before the first-file rule
                    # made it a duplicate: its PNG goes, as the local engine never writes one.
                    (self.out / HEATMAP_DIR / heatmap_png_name(item.job)).unlink(missing_ok=True)
                cursor += 1

        drain()
        if todo:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = bool(self.bar)
            size = self._pool_size()
            logger.info(
                "infer: %d file(s) to score on Ray: %d actor(s) of %g CPU and %g GPU",
                len(todo),
                size,
                self.cpus_per_actor,
                self.gpus_per_actor,
            )
            # Enough blocks to keep every actor busy, few enough that a block's overhead stays small.
            blocks = max(-(-len(todo) // JOBS_PER_BLOCK), min(-(-len(todo) // self.batch_size), 4 * size))
            # Columns (Arrow), not a dict per job: the driver's share of a big manifest stays small.
            table = _jobs_table(todo)
            step = -(-len(todo) // blocks)
            dataset = ray.data.from_arrow(
                [table.slice(start, step) for start in range(0, len(todo), step)]
            ).map_batches(
                FilmScorer,
                fn_constructor_kwargs={"spec": self.spec},
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=self.cpus_per_actor,
                num_gpus=self.gpus_per_actor,
            )
            try:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    for index, state, heatmaps, scored, failed in zip(
                        batch["index"],
                        batch["row"],
                        batch["heatmaps"],
                        batch["scored"],
                        batch["output_failed"],
                        strict=True,
                    ):
                        index = int(index)
                        if index in taken:  # exactly one row per file, whatever is delivered
                            logger.warning("%s: a second row from Ray ignored", jobs[index].rel)
                            continue
                        taken.add(index)
                        self.summary.n_inferred += bool(scored)
                        self.summary.output_failures += bool(failed)
                        row = ResultRow.from_state(json.loads(str(state)))
                        ready[index] = FilmItem(jobs[index], row=row, heatmaps=bool(heatmaps))
                    drain()
            except ray.exceptions.RayError as exc:  # a worker that cannot load the bundle, a lost cluster
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                cause = lines[-1][:500] if lines else type(exc).__name__  # Ray's traceback ends in the cause
                raise RayEngineError(
                    f"the Ray engine stopped with {len(taken)} of {len(jobs)} file(s) done ({cause}); "
                    "the rows done are kept, and the same command resumes once the cause is fixed"
                ) from exc
        if cursor != len(jobs):
            raise RayEngineError(f"Ray gave no row for {len(jobs) - cursor} file(s)")
