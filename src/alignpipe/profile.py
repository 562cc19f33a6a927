"""Apply a parameter profile: deep-merge `profiles/<name>.yaml` over the default params into params.yaml.

    python -m alignpipe.profile tiny            # writes params.yaml (validated first)
    python -m alignpipe.profile paper --out my-params.yaml

`git checkout params.yaml` restores the default. `dvc exp run --set-param KEY=VALUE` is the other way to
change a few values without editing the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from alignpipe.config import ConfigError, validate_params


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def apply_profile(name: str, params_path: str | Path = "params.yaml", profiles_dir: str | Path = "profiles") -> dict:
    """Merge a profile over ``params_path`` and return the validated result (a plain dict)."""
    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
        raise ConfigError(f"profile '{name}' not found ({path}); available: {have}")
    base = yaml.safe_load(Path(params_path).read_text(encoding="utf-8")) or {}
    merged = deep_merge(base, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    validate_params(merged, f"{path} over {params_path}")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignpipe.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="where to write (default: overwrite --params)")
    args = parser.parse_args(argv)
    try:
        merged = apply_profile(args.name, args.params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(args.out or args.params).write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
