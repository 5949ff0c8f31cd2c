"""Build objects from the configs' ``class_path`` / ``init_args`` specs outside the CLI.

Benchmarks and notebooks reuse the experiment YAMLs this way, type-checked by jsonargparse
exactly as ``ae-lightning fit`` would::

    cfg = load_config("configs/dae_xray64.yaml")
    model = instantiate(cfg["model"], L.LightningModule)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load_config(path: str | Path) -> dict[str, Any]:
    """The YAML at ``path``; a bare name such as ``dae_xray64`` is looked up in ``configs/``."""
    p = Path(path)
    if not p.suffix:
        p = CONFIGS / f"{p}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"config {p} does not exist; fix: pass a path to a YAML file (see configs/)")
    return yaml.safe_load(p.read_text())


def instantiate(spec: dict[str, Any], base: type = object) -> Any:
    """An instance of ``spec['class_path']`` (a subclass of ``base``) built from ``spec['init_args']``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, "obj", required=True)
    return parser.instantiate(parser.parse_object({"obj": spec})).obj
