"""Where a DataModule's data come from: one lookup order for the CLI, the benchmarks and ``predict``.

For a dataset family (``mnist``, ``xray``, ``celeba``, ``utkface``) the first of these that applies:

1. the root the user passed (``--data.init_args.root``, a benchmark's ``--data``, a config's ``root``);
2. the family's environment variable (:data:`ENV`, e.g. ``AE_MNIST_ROOT=/data/mnist``);
3. the project's own ``data/<family>`` folder (relative to the working directory), when it exists;
4. with ``download=True``: ``data/<family>``, which the DataModule's ``prepare_data`` downloads into;
5. the embedded real sample shipped in the package (``root=None`` below), where the family has one.

Nothing else is searched: no folder beside the project, no home directory. The result says which rule
applied, so every table and log line can state where its data came from::

    >>> locate("mnist", None).root is None or True   # the embedded digits when nothing is set
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: the environment variable each family reads (rule 2)
ENV = {"mnist": "AE_MNIST_ROOT", "xray": "AE_XRAY_ROOT", "celeba": "AE_CELEBA_ROOT", "utkface": "AE_UTKFACE_ROOT"}
#: the project's data folder (rule 3), relative to the working directory
LOCAL = Path("data")


@dataclass(frozen=True)
class Located:
    """A DataModule's data source: ``root`` (``None``: the embedded sample) and the rule that chose it."""

    root: Path | list[Path] | None
    rule: str  # "passed", "$AE_MNIST_ROOT", "data/mnist", "download into data/mnist", "embedded"

    def describe(self) -> str:
        return {"passed": "passed explicitly", "embedded": "the embedded sample"}.get(self.rule, self.rule)


def locate(family: str, root: str | Path | list | tuple | None = None, download: bool = False) -> Located:
    """The data source of ``family`` by the module's lookup order (a list ``root`` is kept as a list)."""
    if family not in ENV:
        raise ValueError(f"unknown dataset family {family!r}; known: {', '.join(ENV)}")
    if root is not None and root != "" and root != []:
        if isinstance(root, list | tuple):
            return Located([Path(r).expanduser() for r in root], "passed")
        return Located(Path(root).expanduser(), "passed")
    env = os.environ.get(ENV[family])
    if env:
        return Located(Path(env).expanduser(), f"${ENV[family]}")
    local = LOCAL / family
    if local.exists():
        return Located(local, str(local))
    if download:
        return Located(local, f"download into {local}")
    return Located(None, "embedded")
