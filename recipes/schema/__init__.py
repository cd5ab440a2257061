"""The recipe format: one YAML file that describes a training job (pydantic and PyYAML
only, no torch: the CLI, the launcher and the nodes all read it).

recipe.py holds the sections and how a file is read and written; rules.py the rules
that span several keys; validation_messages.py turns validation errors into one line per bad key;
aliases.py maps other tools' key names onto ours; chat_templates.py names the built-in
chat templates. The names below are the format's public API.
"""

from __future__ import annotations

from recipes.schema.recipe import (
    SECTIONS,
    ClusterSection,
    DataFormat,
    DataSection,
    DistributedSection,
    FileFormat,
    FsdpKind,
    GrpoSection,
    LoraSection,
    MethodKind,
    MethodSection,
    ModelSection,
    NodeSection,
    OffloadKind,
    OptimizerKind,
    OutputSection,
    PrecisionKind,
    Recipe,
    RecipeError,
    ReportKind,
    SchedulerKind,
    TaskKind,
    TaskSection,
    TinyModelSection,
    TrainingSection,
    apply_overrides,
    dump_recipe,
    load_recipe,
    parse_recipe,
    read_recipe_mapping,
    recipe_mapping_from_text,
)

__all__ = [
    "SECTIONS",
    "ClusterSection",
    "DataFormat",
    "DataSection",
    "DistributedSection",
    "FileFormat",
    "FsdpKind",
    "GrpoSection",
    "LoraSection",
    "MethodKind",
    "MethodSection",
    "ModelSection",
    "NodeSection",
    "OffloadKind",
    "OptimizerKind",
    "OutputSection",
    "PrecisionKind",
    "Recipe",
    "RecipeError",
    "ReportKind",
    "SchedulerKind",
    "TaskKind",
    "TaskSection",
    "TinyModelSection",
    "TrainingSection",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "read_recipe_mapping",
    "recipe_mapping_from_text",
]
