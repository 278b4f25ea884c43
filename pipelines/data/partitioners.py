"""Device partitioners: which device gets each video. Pure numpy, seeded through an explicit Generator.

Each partitioner follows the scikit-learn habit: ``__init__`` only stores parameters, ``assign`` does
the work and returns one device index per row of ``labels``. Every device receives at least one row.
:func:`fedtwin.pipelines.data.partition.partition_dataset` calls ``assign`` with one row per *video* (the label
of its clips), so all clips of a video land on one device; for datasets with one clip per video
(generated moving digits) a row is a clip.

A partitioner that sets the class attribute ``needs_groups = True`` also receives ``groups=``, the
``group`` column (camera, owner) of every video; ``by-group`` (:class:`GroupPartitioner`) is one.

Partitioner plugins. ``data.partition.scheme`` names a built-in (``PARTITIONERS``: iid, dirichlet,
shards, by-group), an entry point of the ``fedtwin.partitioners`` group, or an import path
``"pkg.module:MyPartitioner"`` to a class following :class:`Partitioner`. Its constructor parameters are
filled by name: a parameter named like a ``PartitionConfig`` field (``alpha``, ``min_size``,
``labels_per_device``, ...) gets that field, any other from ``data.partition.params``. The class is
resolved where partitioning runs (:func:`fedtwin.pipelines.data.partition.partition_dataset`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fedtwin.pipelines.plugins import load_plugin

PARTITIONER_GROUP = "fedtwin.partitioners"


class Partitioner(Protocol):
    """Assigns rows (videos, given their labels) to ``num_devices`` devices.

    Implementations must be deterministic given ``rng`` (draw nothing from global random state), give
    every device at least one row, and raise ``ValueError("...")`` for infeasible settings (it becomes
    a one-line error naming the scheme). With ``needs_groups = True`` on the class, ``assign`` is
    called with the keyword ``groups`` (one string per row).
    """

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        """Device index in [0, num_devices) for every row; int64, shape (len(labels),)."""
        ...

    def get_params(self) -> dict[str, Any]:
        """The parameters, as recorded in the partition manifest."""
        ...


def _check_enough_rows(n: int, num_devices: int, per_device: int = 1) -> None:
    if num_devices < 1:
        raise ValueError(f"devices: must be >= 1, got {num_devices}")
    if n < num_devices * per_device:
        raise ValueError(
            f"{n} rows cannot give {num_devices} devices {per_device} example(s) each; "
            "use fewer devices, a smaller min size or more data"
        )


class IIDPartitioner:
    """Uniformly shuffled rows cut into ``num_devices`` near-equal parts (sizes differ by at most 1)."""

    def get_params(self) -> dict[str, Any]:
        """See :class:`Partitioner`."""
        return {}

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        """See :class:`Partitioner`."""
        n = len(labels)
        _check_enough_rows(n, num_devices)
        device = np.empty(n, dtype=np.int64)
        device[rng.permutation(n)] = np.arange(n, dtype=np.int64) * num_devices // n
        return device


class DirichletPartitioner:
    """Label skew: each class's rows are spread over devices with proportions ~ Dirichlet(alpha).

    Small ``alpha`` concentrates a class on few devices (strong skew); large ``alpha`` approaches IID.
    ``min_size`` is guaranteed without resampling (resampling until every device is big enough
    never ends for thousands of devices): devices below it receive random rows taken from devices
    above it, moving exactly the missing number of rows. Always terminates.
    """

    def __init__(self, alpha: float = 0.5, min_size: int = 1) -> None:
        self.alpha = alpha
        self.min_size = min_size

    def get_params(self) -> dict[str, Any]:
        """See :class:`Partitioner`."""
        return {"alpha": self.alpha, "min_size": self.min_size}

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        """See :class:`Partitioner`."""
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be > 0, got {self.alpha}")
        if self.min_size < 1:
            raise ValueError(f"min_size: must be >= 1, got {self.min_size}")
        labels = np.asarray(labels)
        n = len(labels)
        _check_enough_rows(n, num_devices, self.min_size)
        device = np.empty(n, dtype=np.int64)
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(num_devices, self.alpha))
            counts = rng.multinomial(len(rows), props / props.sum())
            device[rows] = np.repeat(np.arange(num_devices, dtype=np.int64), counts)
        return _top_up(device, num_devices, self.min_size, rng)


def _top_up(device: np.ndarray, num_devices: int, min_size: int, rng: np.random.Generator) -> np.ndarray:
    """Move random surplus rows (beyond ``min_size``) of large devices to devices below ``min_size``.

    Feasible whenever n >= num_devices * min_size: total surplus - total deficit = n - N * min_size.
    """
    sizes = np.bincount(device, minlength=num_devices)
    deficit = np.maximum(0, min_size - sizes)
    if not deficit.any():
        return device
    # Rank every row within its device in a random order; ranks >= min_size are surplus.
    order = rng.permutation(len(device))
    order = order[np.argsort(device[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(device), dtype=np.int64)
    rank[order] = np.arange(len(device)) - starts[device[order]]
    surplus_rows = np.flatnonzero(rank >= min_size)
    moved = rng.choice(surplus_rows, size=int(deficit.sum()), replace=False)
    receivers = rng.permutation(np.repeat(np.arange(num_devices, dtype=np.int64), deficit))
    out = device.copy()
    out[moved] = receivers
    return out


class ShardPartitioner:
    """Pathological label skew (McMahan et al.): ``labels_per_device`` single-label shards per device.

    Every class is cut into shards (the N*L shards are apportioned to classes by size, at least one
    each), so no shard mixes labels; shards are dealt at random, then duplicates are swapped away so
    each device holds L *distinct* labels. Needs L <= number of classes and no class so large that it
    needs more than N shards.
    """

    def __init__(self, labels_per_device: int = 2) -> None:
        self.labels_per_device = labels_per_device

    def get_params(self) -> dict[str, Any]:
        """See :class:`Partitioner`."""
        return {"labels_per_device": self.labels_per_device}

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        """See :class:`Partitioner`."""
        per = self.labels_per_device
        labels = np.asarray(labels)
        _check_enough_rows(len(labels), num_devices)
        classes, class_sizes = np.unique(labels, return_counts=True)
        if not 1 <= per <= len(classes):
            raise ValueError(f"labels_per_device: must be in [1, {len(classes)}] (classes present), got {per}")
        shard_counts = _apportion(num_devices * per, class_sizes, upper=np.minimum(class_sizes, num_devices))
        shard_label = np.repeat(np.arange(len(classes)), shard_counts)
        holder = _deal_distinct(shard_label, num_devices, per, rng)  # device of each shard
        device = np.empty(len(labels), dtype=np.int64)
        first_shard = 0
        for k, c in enumerate(classes):
            rows = rng.permutation(np.flatnonzero(labels == c))
            cuts = np.array_split(rows, shard_counts[k])
            for j, part in enumerate(cuts):
                device[part] = holder[first_shard + j]
            first_shard += shard_counts[k]
        return device


class GroupPartitioner:
    """One device per ``group`` value (a camera, an owner): the natural federated split.

    Device ``i`` holds every video of the ``i``-th group in sorted order (string order, so ``cam10``
    sorts before ``cam2``). ``num_devices`` must equal the number of groups; the partition derives it
    when ``data.partition.devices`` is null (``--devices`` omitted). ``rng`` is not used.
    """

    needs_groups = True

    def get_params(self) -> dict[str, Any]:
        """See :class:`Partitioner`."""
        return {}

    def assign(
        self, labels: np.ndarray, num_devices: int, rng: np.random.Generator, *, groups: np.ndarray | None = None
    ) -> np.ndarray:
        """See :class:`Partitioner`; ``groups`` holds one group name per row."""
        if groups is None:
            raise ValueError("the dataset has no 'group' column (import videos with an index that has one)")
        groups = np.asarray(groups)
        if len(groups) != len(labels):
            raise ValueError(f"groups: {len(groups)} values for {len(labels)} rows")
        names, device = np.unique(groups, return_inverse=True)
        if num_devices != len(names):
            raise ValueError(
                f"devices: {num_devices} given but the data has {len(names)} groups; set it to {len(names)}, "
                "or to null (omit --devices) for one device per group"
            )
        return device.astype(np.int64).reshape(len(labels))


def _apportion(total: int, sizes: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Split ``total`` shards over classes proportionally to ``sizes``, each in [1, upper]."""
    if total < len(sizes) or total > upper.sum():
        raise ValueError(
            f"cannot cut {total} shards (devices x labels_per_device) over {len(sizes)} classes with "
            f"at most {int(upper.sum())} single-label shards; change devices or labels_per_device"
        )
    target = total * sizes / sizes.sum()
    counts: np.ndarray = np.clip(np.floor(target).astype(np.int64), 1, upper)
    while counts.sum() < total:  # give to the class furthest below its share that still has room
        gap = np.where(counts < upper, target - counts, -np.inf)
        counts[np.argmax(gap)] += 1
    while counts.sum() > total:  # take from the class furthest above its share that can spare one
        gap = np.where(counts > 1, counts - target, -np.inf)
        counts[np.argmax(gap)] -= 1
    return counts


def _deal_distinct(shard_label: np.ndarray, num_devices: int, per: int, rng: np.random.Generator) -> np.ndarray:
    """Deal shards ``per`` to a device at random, then swap until no device holds a label twice.

    Each swap moves a duplicate shard s (label y, device a) with a shard t (label z, device b) where
    a lacks z and b lacks y, so it removes one duplicate and creates none: one pass suffices unless
    no partner exists, in which case the round-robin deal (always valid) is used instead.
    """
    num_labels = int(shard_label.max()) + 1
    holder = np.empty(len(shard_label), dtype=np.int64)
    holder[rng.permutation(len(shard_label))] = np.arange(len(shard_label)) // per
    count = np.zeros((num_devices, num_labels), dtype=np.int64)
    np.add.at(count, (holder, shard_label), 1)
    for s in rng.permutation(np.flatnonzero(count[holder, shard_label] > 1)):
        a, y = holder[s], shard_label[s]
        if count[a, y] < 2:  # an earlier swap already fixed this device
            continue
        partners = np.flatnonzero((count[a, shard_label] == 0) & (count[holder, y] == 0))
        if len(partners) == 0:
            return _deal_round_robin(shard_label, num_devices, rng)
        t = partners[rng.integers(len(partners))]
        b, z = holder[t], shard_label[t]
        holder[s], holder[t] = b, a
        count[a, y] -= 1
        count[a, z] += 1
        count[b, z] -= 1
        count[b, y] += 1
    return holder


def _deal_round_robin(shard_label: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
    """Deal shards sorted by label to devices in turn (the fallback of :func:`_deal_distinct`).

    Always valid when no label has more than ``num_devices`` shards: equal labels are consecutive,
    at most N of them, so they land on distinct devices. Less random than the swap repair.
    """
    order = np.argsort(shard_label, kind="stable")
    device_of_slot = rng.permutation(num_devices)
    holder = np.empty(len(shard_label), dtype=np.int64)
    holder[order] = device_of_slot[np.arange(len(shard_label)) % num_devices]
    return holder


#: The built-in partitioners (the ``builtins`` table of the ``fedtwin.partitioners`` group).
PARTITIONERS: dict[str, type] = {
    "iid": IIDPartitioner,
    "dirichlet": DirichletPartitioner,
    "shards": ShardPartitioner,
    "by-group": GroupPartitioner,
}


def needs_groups(cls: type) -> bool:
    """Whether partitioner class ``cls`` asks for the ``groups`` of the rows (``needs_groups = True``)."""
    return bool(getattr(cls, "needs_groups", False))


def _is_partitioner_class(obj: Any) -> bool:
    return (
        isinstance(obj, type) and callable(getattr(obj, "assign", None)) and callable(getattr(obj, "get_params", None))
    )


def resolve_partitioner(scheme: str, *, field: str = "data.partition.scheme") -> type:
    """The partitioner class ``scheme`` names (built-in, ``fedtwin.partitioners`` entry point or import path).

    Raises:
        PluginError: one line naming ``field``: unknown name, unimportable module, or not a class with
            ``assign(labels, num_devices, rng)`` and ``get_params()``.
    """
    cls: type = load_plugin(
        scheme,
        PARTITIONER_GROUP,
        PARTITIONERS,
        field=field,
        check=_is_partitioner_class,
        expected="a class with assign(labels, num_devices, rng) and get_params() methods",
        kind="partitioner",
    )
    return cls
