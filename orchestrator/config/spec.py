"""The experiment spec: the common sections every run has, plus the sections of its recipe, and no other.

Common sections: ``name``, ``recipe``, ``seed``, ``data``, ``model``, ``resources``, ``ray``, ``run``,
``plugins``. The recipe (``recipe: federated`` by default; see :mod:`fedtwin.orchestrator.config.recipes`)
declares its own sections, e.g. ``training``/``federation``/``strategy`` for ``federated`` or ``twin``
for ``mutual``; they live in ``spec.sections`` and read as attributes (``spec.federation``). A section
of another recipe in a file is an error that names the key and the recipe it belongs to.

Sections validate their own ranges in ``__post_init__``; :mod:`fedtwin.orchestrator.config.loader` adds strict
key and type checking with dotted paths, and the recipe's ``validate`` checks across sections.
``with_overrides({"a.b": v})`` is the way to change a spec (CLI ``--set`` and Tune trials both use it)
and always re-validates.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from fedtwin.orchestrator.config.files import load_with_bases
from fedtwin.orchestrator.config.loader import ConfigError, apply_overrides, closest, coerce, to_dict
from fedtwin.orchestrator.config.names import check_location, check_run_name
from fedtwin.orchestrator.config.recipes import recipe_declaration, recipes_with_section
from fedtwin.orchestrator.config.sections import (
    DataConfig,
    PluginsConfig,
    RayConfig,
    ResourcesConfig,
    RunConfig,
    TrainConfig,
    check,
)
from fedtwin.pipelines.model.config import ModelConfig
from fedtwin.pipelines.plugins import PluginError, add_search_paths

logger = logging.getLogger(__name__)

# The sections every spec has, in the order spec.yaml lists them (the recipe's own go after ``model``).
COMMON_HEAD = ("name", "recipe", "seed", "data", "model")
COMMON_TAIL = ("resources", "ray", "run", "plugins")
COMMON_KEYS = COMMON_HEAD + COMMON_TAIL

__all__ = [
    "COMMON_KEYS",
    "ConfigError",
    "DataConfig",
    "ExperimentSpec",
    "PluginsConfig",
    "RayConfig",
    "ResourcesConfig",
    "RunConfig",
    "Sections",
    "TrainConfig",
]


class Sections(Mapping[str, Any]):
    """A read-only mapping of a recipe's sections (YAML key -> frozen dataclass); picklable."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Sections({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sections, (self._items,))


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: the common sections plus its recipe's sections (see the module docstring).

    Attributes:
        name: run name (the run folder's prefix): a folder name of at most 234 bytes in UTF-8 (see
            :mod:`fedtwin.orchestrator.config.names`).
        recipe: the recipe: ``federated`` (default), ``mutual``, ``incremental``, ``transfer``, an entry
            point of ``fedtwin.recipes`` or an import path ``pkg.module:MyRecipe``.
        seed: the experiment seed.
        data: where the data comes from.
        model: the network.
        resources: declared CPUs/GPUs of the actors.
        ray: how to reach Ray.
        run: run folder and checkpoints.
        plugins: folders of user plugin modules.
        sections: the recipe's own sections (YAML key -> frozen dataclass), in the recipe's order; any
            not given take their defaults. Read them as attributes: ``spec.federation``.
    """

    name: str = "experiment"
    recipe: str = "federated"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    run: RunConfig = field(default_factory=RunConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    sections: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            check_run_name(self.name)  # the run folder's name: checked before anything is written
            for where, location in (("run.output_dir", self.run.output_dir), ("data.root", self.data.root)):
                check_location(location, where)
            check_location(self.data.path, "data.path")
            check(self.seed >= 0, f"seed: must be >= 0, got {self.seed}")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        add_search_paths(self.plugins.paths)  # before the recipe (or anything else) resolves a plugin
        cls = recipe_declaration(self.recipe)  # a built-in's torch-free declaration, else the recipe class
        object.__setattr__(self, "sections", _build_sections(self.recipe, cls, self.sections))
        try:
            cls.validate(self)
        except PluginError as err:
            raise ConfigError(str(err)) from None

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a recipe section, or a clear AttributeError. Dunder and
        # private names (pickle and copy probe them on half-built instances) never look at the sections.
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        if name.startswith("_") or sections is None:
            raise AttributeError(name)
        raise AttributeError(
            f"{name!r} is not a section of recipe {self.__dict__.get('recipe')!r} "
            f"(its sections: {', '.join(sections) or 'none'})"
        )

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("sections", {})))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Validate a plain mapping (e.g. parsed YAML): common keys, then the recipe's sections.

        Raises:
            ConfigError: naming the dotted key; a section of another recipe names that recipe.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"<root>: expected a mapping of sections, got {type(data).__name__} {data!r}")
        hints = _common_hints()
        kwargs: dict[str, Any] = {}
        # plugins first: its folders must be on sys.path before the model or the recipe resolve
        for key in ("plugins", *COMMON_KEYS):
            if key in data and key not in kwargs:
                kwargs[key] = coerce(hints[key], data[key], key)
                if key == "plugins":
                    add_search_paths(kwargs[key].paths)
        sections = {str(k): v for k, v in data.items() if k not in COMMON_KEYS}
        return cls(**kwargs, sections=sections)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """A spec that fedtwin itself saved (a run's ``spec.yaml``, a sweep's ``base.yaml``).

        fedtwin 0.1 saved every recipe's section in every spec; those other recipes' sections are
        dropped here, so run folders and sweeps from before 0.2 still resume.
        """
        recipe = data.get("recipe", "federated")
        plugins = data.get("plugins")
        if isinstance(plugins, Mapping) and isinstance(plugins.get("paths"), list):
            add_search_paths([str(p) for p in plugins["paths"]])
        declared = recipe_declaration(recipe) if isinstance(recipe, str) else None
        own = set(declared.sections) if declared is not None else set()
        legacy = {"federation", "strategy", "training", "twin", "incremental", "transfer"} - own
        kept = {k: v for k, v in data.items() if k not in legacy}
        retired = getattr(declared, "retired_keys", {}) if declared is not None else {}
        for dotted, instead in retired.items():
            section, _, key = dotted.partition(".")
            if isinstance(kept.get(section), Mapping) and key in kept[section]:
                kept[section] = {k: v for k, v in kept[section].items() if k != key}
                logger.warning("%s: ignored in this stored spec (%s)", dotted, instead)
        return cls.from_dict(kept)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentSpec:
        """Load a YAML file (with its ``base:`` chain), apply dotted ``overrides`` and validate.

        Relative ``plugins.paths`` are taken from the folder of the file that lists them and stored
        absolute. Errors are one line that starts with the file name.
        """
        data = load_with_bases(path, relative_keys=("plugins.paths",))
        try:
            return cls.from_dict(apply_overrides(data, overrides or {}))
        except (ConfigError, PluginError) as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, YAML-safe: the common sections and the recipe's; ``from_dict(to_dict())`` round-trips."""
        out = {key: to_dict(getattr(self, key)) for key in COMMON_HEAD}
        out.update((key, to_dict(value)) for key, value in self.sections.items())
        out.update((key, to_dict(getattr(self, key))) for key in COMMON_TAIL)
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentSpec:
        """A new validated spec with dotted keys replaced (e.g. ``{"federation.num_rounds": 5}``)."""
        return ExperimentSpec.from_dict(apply_overrides(self.to_dict(), overrides))

    def replace(self, **changes: Any) -> ExperimentSpec:
        """A new validated spec with top-level sections replaced, common or the recipe's (``federation=...``)."""
        data = self.to_dict()
        if "sections" in changes:
            data = {k: v for k, v in data.items() if k in COMMON_KEYS}
            data.update((k, to_dict(v)) for k, v in changes.pop("sections").items())
        data.update((k, to_dict(v)) for k, v in changes.items())
        return ExperimentSpec.from_dict(data)


def _common_hints() -> dict[str, Any]:
    hints = get_type_hints(ExperimentSpec)
    return {key: hints[key] for key in COMMON_KEYS}


def _build_sections(recipe: str, cls: type[Any], given: Mapping[str, Any]) -> Sections:
    """The recipe's sections in its declared order: given ones checked (mappings coerced), others default."""
    declared: dict[str, type] = dict(cls.sections)
    for dotted, instead in getattr(cls, "retired_keys", {}).items():
        section, _, key = dotted.partition(".")
        if isinstance(given.get(section), Mapping) and key in given[section]:
            raise ConfigError(f"{dotted}: no longer a setting; {instead}")
    for key in declared:
        if key in COMMON_KEYS or key in ("sections", "base"):
            raise ConfigError(f"recipe: {recipe!r} declares a section {key!r}, which is a common key; rename it")
    for key in given:
        if key not in declared:
            raise ConfigError(_unknown_section(str(key), recipe, declared))
    out: dict[str, Any] = {}
    for key, section_cls in declared.items():
        if key not in given:
            try:
                out[key] = section_cls()
            except TypeError:
                raise ConfigError(f"{key}: missing; recipe {recipe!r} needs this section") from None
            continue
        value = given[key]
        if isinstance(value, section_cls):
            out[key] = value
        elif isinstance(value, Mapping) or value is None or not dataclasses.is_dataclass(value):
            out[key] = coerce(section_cls, value, key)
        else:
            raise ConfigError(f"{key}: expected a {section_cls.__name__} or a mapping, got {type(value).__name__}")
    return Sections(out)


def _unknown_section(key: str, recipe: str, declared: Mapping[str, type]) -> str:
    """The one-line error for a top-level key that is neither common nor the recipe's."""
    owners = [name for name in recipes_with_section(key) if name != recipe]
    if owners:
        which = f"recipe '{owners[0]}'" if len(owners) == 1 else "recipes " + ", ".join(f"'{o}'" for o in owners)
        fix = " or ".join(owners)
        return f"{key}: not a section of recipe '{recipe}' (it belongs to {which}); remove it or set recipe: {fix}"
    allowed = [*COMMON_KEYS, *declared]
    near = closest(key, allowed)
    hint = f" (did you mean '{near}'?)" if near else ""
    return f"{key}: unknown key{hint}; recipe '{recipe}' allows: {', '.join(sorted(allowed))}"
