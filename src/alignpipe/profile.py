"""Try a parameter profile the DVC way: an experiment with the profile's values, never an edit of params.yaml.

    python -m alignpipe.profile tiny                 # dvc exp run --temp -S <every value of profiles/tiny.yaml>
    python -m alignpipe.profile paper --queue        # queue it instead (dvc queue start runs it)
    python -m alignpipe.profile tiny --dry-run       # print the dvc command only
    python -m alignpipe.profile tiny -- --name t1    # anything after -- goes to `dvc exp run`
    python -m alignpipe.profile paper --out p.yaml   # write the merged params to another file (not params.yaml)

A profile (``profiles/<name>.yaml``) is deep-merged over params.yaml: mappings key by key, anything else (a list, a
value) replaces. The merged params are validated first, then every leaf of the profile becomes one ``-S`` override
(Hydra's ``++key=value``: set, or add where params.yaml lacks the key) of ``dvc exp run``. DVC applies them to a
copy of the workspace (``--temp``) or to the queued experiment, so params.yaml and ``git status`` stay as they were;
``dvc exp show`` lists the result, ``dvc exp apply <exp>`` brings it into the workspace if wanted.

:func:`apply_profile` returns the merged params as a dict, for tools and tests that build a whole params file for a
copy of the repository (tests/conftest.py's tiny-profile repo).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from alignpipe.config import ConfigError, read_yaml, validate_params


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def load_profile(name: str, profiles_dir: str | Path = "profiles") -> dict[str, Any]:
    """The mapping in ``profiles/<name>.yaml``; an unknown name fails listing the profiles there."""
    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))
        raise ConfigError(f"profile '{name}' not found ({path}); available: {have}")
    return read_yaml(path.read_text(encoding="utf-8"), str(path)) or {}


def apply_profile(name: str, params_path: str | Path = "params.yaml", profiles_dir: str | Path = "profiles") -> dict:
    """Merge a profile over ``params_path`` and return the validated result (a plain dict; nothing is written)."""
    base = read_yaml(Path(params_path).read_text(encoding="utf-8"), str(params_path)) or {}
    merged = deep_merge(base, load_profile(name, profiles_dir))
    validate_params(merged, f"{Path(profiles_dir) / name}.yaml over {params_path}")
    return merged


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (what ``dvc exp run -S`` parses): strings quoted, YAML scalars."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"profile value {value!r}: not a YAML scalar, list or mapping")


def overrides(profile: dict[str, Any], prefix: str = "") -> list[str]:
    """One ``++key.path=value`` per leaf of ``profile`` (a non-empty mapping is walked; anything else is a leaf)."""
    out = []
    for key, value in profile.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += overrides(value, f"{path}.")
        else:
            out.append(f"++{path}={_hydra_value(value)}")
    return out


def exp_run_command(name: str, params_path: str | Path = "params.yaml", profiles_dir: str | Path = "profiles",
                    queue: bool = False, extra: list[str] | None = None) -> list[str]:
    """The ``dvc exp run`` command that tries profile ``name`` (validated over ``params_path`` first)."""
    apply_profile(name, params_path, profiles_dir)
    sets = [arg for override in overrides(load_profile(name, profiles_dir)) for arg in ("-S", override)]
    return [sys.executable, "-m", "dvc", "exp", "run", "--queue" if queue else "--temp", *sets, *(extra or [])]


def main(argv: list[str] | None = None) -> int:
    """CLI: run (or queue, or print) the profile's experiment; ``--out`` writes the merged params elsewhere."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m alignpipe.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--params", default="params.yaml", help="the params file the profile is merged over")
    parser.add_argument("--profiles-dir", default="profiles")
    parser.add_argument("--queue", action="store_true", help="dvc exp run --queue instead of --temp")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command, run nothing")
    parser.add_argument("--out", default=None, help="write the merged params to this file (never the params file)")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            if Path(args.out).resolve() == Path(args.params).resolve():
                raise ConfigError(f"--out {args.out}: profiles never rewrite the params file; try it with "
                                  f"`python -m alignpipe.profile {args.name}` (a DVC experiment)")
            merged = apply_profile(args.name, args.params, args.profiles_dir)
            Path(args.out).write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
            return 0
        cmd = exp_run_command(args.name, args.params, args.profiles_dir, args.queue, extra)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(["dvc", *cmd[3:]]))  # cmd = [python, -m, dvc, exp, run, ...]
        return 0
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
