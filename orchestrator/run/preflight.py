"""Checks of a spec against the outside world that run before the run folder exists.

``run_experiment`` calls :meth:`Recipe.preflight <fedtwin.orchestrator.recipes.base.Recipe.preflight>` (no Ray,
no actors, nothing written), then connects to Ray and calls :func:`check_cluster`, and only then creates
the run folder. So bad input (a missing or broken dataset, a manifest whose files are gone, more devices
per round than devices, a run that cannot fit on the cluster) is one line and exit 2, and leaves no
half-made run folder behind.

What is checked here for every recipe (:func:`check_common`):

- ``run.output_dir`` is a directory or can become one (not an existing file); a URI has a known scheme,
  and its bucket exists and takes a write with the credentials found (one probe object);
- ``data.root``, when data is to be made there and it is a URI: the same;
- ``data.path`` and ``data.dataset`` do not both name the data; a ``data.dataset`` plugin resolves;
- ``data.path``, when set, is an existing directory with a readable ``manifest.json`` (a dataset or a
  partition), and every clip file the manifest names exists, is a readable Parquet file with the
  manifest's clip shape, and holds the rows the manifest points at. A URI is checked the same way
  (scheme, bucket, credentials, then the manifest and every file's Parquet footer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedtwin.orchestrator.run.footprint import Bundle, bundle, describe_bundle
from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import DatasetError, FedtwinError

NO_DATA_HINT = (
    "point it at a partition (`fedtwin data partition IN/ OUT/ ...`) or a dataset "
    "(`fedtwin data make moving-digits OUT/`), or drop data.path to generate moving digits"
)


def check_common(spec: Any) -> None:
    """The checks every recipe shares (see the module docstring).

    Raises:
        FedtwinError: one line naming the field and the fix (exit 2).
    """
    check_output_dir(spec.run.output_dir)
    data = spec.data
    dataset = getattr(data, "dataset", None)
    if data.path is not None and dataset is not None:
        raise FedtwinError(f"data.dataset: {dataset!r} and data.path {data.path} both name the data; set one of them")
    if dataset is not None:
        from fedtwin.orchestrator.run.data_prep import resolve_dataset

        resolve_dataset(dataset)
    if data.path is not None:
        check_data_dir(data.path)
    else:
        storage.check_scheme(data.root, "data.root")
        if storage.is_remote(data.root):
            storage.check_location(data.root, "data.root", writable=True)
        else:
            check_output_dir(data.root, "data.root")  # generated data goes there: it must be a folder


def check_output_dir(output_dir: str | Path, field: str = "run.output_dir") -> None:
    """``run.output_dir`` must be a directory or a path where one can be made (or a writable URI)."""
    storage.check_scheme(output_dir, field)
    if storage.is_remote(output_dir):
        storage.check_location(output_dir, field, writable=True)
        return
    path = Path(storage.as_location(output_dir))
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == path else f"is inside {parent}, which is a file"
                fix = "choose another folder (--output DIR)" if field == "run.output_dir" else f"choose another {field}"
                raise FedtwinError(f"{field} {path}: {what}, not a directory; {fix}")
            return


def check_data_dir(path: str | Path) -> dict[str, Any]:
    """``data.path``: an existing directory with a readable manifest whose clip files are all there.

    Returns:
        ``{"kind": "partition"|"dataset", "manifest": <the loaded manifest>}``.

    Raises:
        FedtwinError: one line naming ``data.path`` (or the broken file) and the fix.
    """
    from fedtwin.pipelines.data.manifest import MANIFEST_NAME, read_json

    storage.check_location(path, "data.path")
    root = storage.as_location(path)
    manifest_path = storage.child(root, MANIFEST_NAME)
    if isinstance(root, str):  # object storage: a folder is a prefix, so only the manifest tells
        if not storage.is_file(manifest_path):
            what = "no such folder" if not storage.exists(root) else f"no {MANIFEST_NAME} there"
            raise FedtwinError(f"data.path {root}: {what}; {NO_DATA_HINT}")
    elif not root.exists():
        raise FedtwinError(f"data.path {root}: does not exist; {NO_DATA_HINT}")
    elif not root.is_dir():
        raise FedtwinError(f"data.path {root}: is a file, not a directory; {NO_DATA_HINT}")
    elif not (root / MANIFEST_NAME).is_file():
        raise FedtwinError(f"data.path {root}: no {MANIFEST_NAME} there; {NO_DATA_HINT}")
    obj = read_json(manifest_path, "re-create the directory with `fedtwin data ...`")
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind not in ("fedtwin-partition", "fedtwin-dataset"):
        raise DatasetError(
            f"{manifest_path}: neither a fedtwin partition nor a dataset manifest (kind={kind!r}); {NO_DATA_HINT}"
        )
    if kind == "fedtwin-partition":
        from fedtwin.pipelines.data.partition_manifest import REPARTITION_HINT, load_partition_manifest

        partition = load_partition_manifest(root)
        rows: dict[Path | str, int] = {}
        for d in range(partition.num_devices):
            entry = partition.device(d)
            rows[entry.path] = max(rows.get(entry.path, 0), entry.row_offset + entry.num_examples)
        for split in (partition.shared, partition.test):
            if split.num_examples > 0:
                file = storage.child(root, split.path)
                rows[file] = max(rows.get(file, 0), split.num_examples)
        for file, needed in rows.items():
            _check_clip_file(file, manifest_path, partition.clip_shape, needed, REPARTITION_HINT)
        return {"kind": "partition", "manifest": partition}
    from fedtwin.pipelines.data.manifest import REGENERATE_HINT, load_dataset_manifest

    dataset = load_dataset_manifest(root)  # any other kind: one line naming the expected kind
    for name, info in dataset.splits.items():
        _check_clip_file(
            dataset.split_path(name), manifest_path, dataset.clip_shape, info.num_examples, REGENERATE_HINT
        )
    return {"kind": "dataset", "manifest": dataset}


def _check_clip_file(path: Path | str, manifest: Path | str, clip_shape: Any, rows: int, fix: str) -> None:
    """A readable clip Parquet file with ``clip_shape`` clips and at least ``rows`` rows (footer only)."""
    from fedtwin.pipelines.data.dataset_io import check_clip_schema, open_parquet

    if not storage.is_file(path):
        raise DatasetError(f"{path}: file not found (listed in {manifest}); {fix}")
    pf = open_parquet(path, fix)
    check_clip_schema(pf.schema_arrow, path, clip_shape, fix)
    if pf.metadata.num_rows < rows:
        raise DatasetError(f"{path}: has {pf.metadata.num_rows} rows but the manifest needs {rows}; {fix}")


def check_cluster(
    recipe_cls: type[Any], spec: Any, resources: Mapping[str, float], in_placement_group: bool = False
) -> None:
    """What the run's actors reserve must fit the cluster (else they would wait forever to be placed).

    Uses the recipe's :meth:`footprint`; a recipe that sizes itself to the cluster (e.g. federated with
    ``resources.hosts: null``) is checked for room for one actor. Inside a Tune trial's placement group
    the trial already reserved its footprint, so nothing is checked.

    Raises:
        FedtwinError: naming the ``resources`` keys to lower (exit 2).
    """
    if in_placement_group:
        return
    res = spec.resources
    try:
        need: Bundle = recipe_cls.footprint(spec, {}).total
    except (FedtwinError, ValueError):  # sized to the cluster at setup: one actor must fit
        need = bundle(res.cpus_per_host, res.gpus_per_host)
    short = {k: v for k, v in need.items() if v > float(resources.get(k, 0.0)) + 1e-9}
    if short:
        have = {k: float(resources.get(k, 0.0)) for k in need}
        raise FedtwinError(
            f"resources: this run's actors need {describe_bundle(need)} but the Ray cluster has "
            f"{describe_bundle(have)}; lower resources.hosts / cpus_per_host / gpus_per_host / server_cpus / "
            "server_gpus / host_resources, or add nodes (ray.num_cpus for embedded Ray)"
        )
