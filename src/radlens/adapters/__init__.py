"""Adapters: scikit-learn pipelines trained on embeddings, one registry, saved as safe folders."""

from radlens.adapters import retrieval as _retrieval  # noqa: F401  (registers the retrieval classifier)
from radlens.adapters import zoo as _zoo  # noqa: F401  (registers the built-in adapters)
from radlens.adapters.registry import AdapterDef, available_adapters, get_adapter, register_adapter
from radlens.adapters.targets import PRESETS, TaskSpec, Targets, build_targets, task_from_name

__all__ = ["AdapterDef", "available_adapters", "get_adapter", "register_adapter", "PRESETS", "TaskSpec", "Targets",
           "build_targets", "task_from_name"]
