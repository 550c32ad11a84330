"""What the commands share: their config groups and checks of the command line, reporting a
failure in one line, and the text table of metrics.

Imports nothing heavy: ``handprop-train --help`` must answer before torch is loaded.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from handprop.trainer.errors import (
    ConfigError,
    MachineError,
    UserError,
    as_machine_error,
    exit_status,
    is_known,
    os_error,
)

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = (
    "task",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "gd",
    "trainer",
    "logger",
    "callbacks",
    "monitors",
    "debug",
    "experiment",
    "hparams_search",
)


def options(group: str) -> list[str]:
    """The options of a config group, from the YAML files that ship with the package."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def group_problems(argv: Iterable[str]) -> list[str]:
    """Every ``group=unknown`` on the command line, one phrase each with the allowed options,
    found before Hydra composes anything (whose composition error would name the first)."""
    found = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in GROUPS or value.startswith(("[", "{", "choice(", "range(", "glob(")):
            continue
        allowed = options(key)
        for v in value.split(","):
            if v not in allowed and not (key == "hparams_search" and v == "null"):
                found.append(f"{key}={v} is not an option; choose one of: {', '.join(allowed)}")
    return found


def check_group_overrides(argv: Iterable[str]) -> None:
    """Reject ``group=unknown`` on the command line before Hydra composes anything, so the
    user gets one line with the allowed options instead of a composition error."""
    found = group_problems(argv)
    if found:
        raise ConfigError("; ".join(found))


#: The user's HYDRA_FULL_ERROR while a sweep runs with Hydra's own set (see run_cli); sweep
#: jobs in other processes (the parallel launcher) inherit it.
FULL_ERROR_ENV = "HANDPROP_FULL_ERROR"


def verbose_errors(cfg: Any = None) -> bool:
    if os.environ.get(FULL_ERROR_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1":
        return True
    return bool(cfg is not None and cfg.get("verbose", False))


def report(err: BaseException, verbose: bool = False) -> None:
    """Print an error as one line (the full traceback only when asked for)."""
    if verbose:
        traceback.print_exception(err)
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if type(err).__name__ == "MissingMandatoryValue":
        key = msg.rsplit(":", 1)[-1].strip()
        msg = f"{key} is required: add {key}=... to the command line"
    print(f"error: {msg}", file=sys.stderr)


def call_reporting(fn: Callable[[], Any], cfg: Any) -> Any:
    """``fn()``, with any failure reported as one line and the process ended: status 2 for
    a user's mistake, 1 for anything else (whose traceback is then shown too)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 — every failure becomes one line (trace on request)
        report(e, verbose_errors(cfg) or not is_known(e))
        raise SystemExit(exit_status(e)) from None


def check_split_values(argv: list[str]) -> None:
    """Catch a list or dict value that the shell split at a space (``model.hidden=[16, 16]``
    arrives as ``model.hidden=[16,`` and ``16]``): say how to write it, in one line."""
    pairs = {"[": "]", "{": "}"}
    for i, arg in enumerate(argv):
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        if not any(value.count(o) > value.count(c) for o, c in pairs.items()):
            continue
        whole = arg
        for nxt in argv[i + 1 :]:
            if "=" in nxt or nxt.startswith("-"):
                break
            whole += " " + nxt
        joined = key + "=" + "".join(whole.partition("=")[2].split())
        raise ConfigError(
            f"{arg} is cut short: the shell split the value at a space. Write it without "
            f"spaces, {joined}, or quote it: '{whole}'"
        )


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """Every setting of a config (a plain dict) as a dotted key, ``trainer.max_epochs``."""
    keys = []
    for k, v in node.items():
        if prefix == "" and k == "hydra":
            continue
        if str(k).startswith("_"):  # _target_, _partial_: how to build it, not a setting
            continue
        keys += _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return keys


def closest_key(key: str, keys: list[str]) -> str | None:
    """The real setting a mistyped ``key`` most likely meant, judged by its last part: the
    same name under another group (``lr`` → ``optimizer.lr``), else the nearest spelling
    (``max_epoch``, ``epochs`` → ``trainer.max_epochs``), else a name that contains it."""
    import difflib

    group, leaf = key.rpartition(".")[0], key.rsplit(".", 1)[-1]
    # Shortest first, and the key's own group before others: the likeliest reading wins ties.
    keys = sorted(keys, key=lambda k: (not k.startswith(group + "."), len(k), k))
    by_leaf: dict[str, str] = {}
    for k in keys:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
    if leaf in by_leaf:
        return by_leaf[leaf]
    near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.7)
    if near:
        return by_leaf[near[0]]
    contains = [k for k in keys if len(leaf) >= 4 and leaf in k.rsplit(".", 1)[-1]]
    return contains[0] if contains else None


def _options_with(group: str, key: str) -> dict[str, str]:
    """The options of ``group`` whose YAML file defines ``key``, or a key ending in it
    (``gamma`` → ``fn.gamma``): option → the full key under the group."""
    from omegaconf import OmegaConf

    found = {}
    for option in options(group):
        path = CONF_DIR / group / f"{option}.yaml"
        node = OmegaConf.to_container(OmegaConf.load(path))
        if path.read_text().startswith("# @package _global_"):  # model=cnn: model.… and more
            node = node.get(group) or {}
        keys = _leaves(node)
        match = [k for k in keys if k == key] or [k for k in keys if k.endswith("." + key)]
        if match:
            found[option] = f"{group}.{match[0]}"
    return found


def unknown_key_message(key: str, config_name: str, cfg: Any, choices: dict[str, Any]) -> str:
    """One line for a key the composed config lacks, with the likeliest fix."""
    from omegaconf import OmegaConf

    command = f"handprop-{config_name}"
    keys = _leaves(OmegaConf.to_container(cfg))
    group, _, rest = key.partition(".")
    if rest and group in GROUPS and not any(k.endswith("." + rest) for k in keys):
        owners = _options_with(group, rest)
        if owners:
            names = " or ".join(f"{group}={o}" for o in owners)
            full = next(iter(owners.values()))
            if full == key:
                return (
                    f"{key} is a setting of {names}, not of {group}={choices.get(group)}; "
                    f"add {group}={next(iter(owners))} to the command line"
                )
            return f"{key} is not a setting of {command}; did you mean {full} (with {names})?"
    best = closest_key(key, keys)
    hint = f"did you mean {best}? " if best else ""
    return f"{key} is not a setting of {command}; {hint}see {command} --help for the keys"


def compose_problems(config_name: str, argv: list[str], check_values: bool = False) -> list[str]:
    """Compose the config with the command line's overrides and name every override it
    refuses, one phrase each (an unknown key with its likeliest fix, a malformed override),
    rather than Hydra's multi-line report of the first. Where one is found, the values of
    the config composed from the rest are checked too (:func:`value_problems`), so that one
    line names everything to fix (``check_values``: check them anyway, another check having
    found a problem)."""
    import re

    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    found: list[str] = []
    rest = list(argv)
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        while True:
            try:
                cfg = compose(config_name, overrides=rest)
                break
            except (HydraException, OmegaConfBaseException) as e:
                text = str(e)
            bad = re.search(r"Key '([^']+)' is not in struct", text) or re.search(
                r"Could not override '([^']+)'", text
            )
            if not bad:
                return [*found, " ".join(text.split())]
            key = bad.group(1)
            # The config as the command line's group choices make it: where the key could be.
            groups = [a for a in rest if a.lstrip("+~").partition("=")[0] in GROUPS]
            base = compose(config_name, overrides=groups, return_hydra_config=True)
            choices = dict(base.hydra.runtime.choices)
            found.append(unknown_key_message(key, config_name, base, choices))
            left = [a for a in rest if a.lstrip("+~").partition("=")[0] != key]
            if len(left) == len(rest):  # not one of the overrides: nothing more to learn
                return found
            rest = left
    # "see handprop-train --help for the keys" once, at the end of the last
    tail = f"see handprop-{config_name} --help for the keys"
    keys = [i for i, p in enumerate(found) if p.endswith(tail)]
    for i in keys[:-1]:
        found[i] = found[i].removesuffix(tail).rstrip("; ")
    if found or check_values:
        found += value_problems(config_name, cfg)
    return found


def value_problems(config_name: str, cfg: Any) -> list[str]:
    """The bad values of a composed ``handprop-train`` config (:mod:`handprop.trainer.config`'s
    checks and the task), for a line that already names a bad override. (They load torch: only
    on that error's path; a run checks them itself.)"""
    if config_name != "train":
        return []
    from handprop.trainer.config import problems, resolve_task

    found = problems(cfg)
    try:
        resolve_task(cfg)
    except ConfigError as e:
        found.append(str(e))
    return found


def check_composes(config_name: str, argv: list[str]) -> None:
    """Raise one :class:`ConfigError` line naming every override that does not compose
    (:func:`compose_problems`)."""
    found = compose_problems(config_name, argv)
    if found:
        raise ConfigError("; ".join(found))


def render_help(config_name: str, overrides: list[str]) -> str:
    """The command's ``--help`` text: its ``hydra/help`` template, with the config groups
    listed from the YAML files that ship with the package. (Hydra's own ``--help`` composes
    the config once per option of every group, its own included: ~1 s of the answer.)"""
    from string import Template

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict

    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    text = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
    listing = "\n".join(f"{g}: {', '.join(o)}" for g in groups if (o := options(g)))
    return Template(text).safe_substitute(
        APP_CONFIG_GROUPS=listing + "\n",
        CONFIG=OmegaConf.to_yaml(cfg),
        FLAGS_HELP="--help, --hydra-help, --cfg job, --multirun (-m); see --hydra-help",
        HYDRA_CONFIG_GROUPS="(see --hydra-help)",
    )


def run_cli(hydra_main: Callable[[], Any], config_name: str) -> None:
    """Run a Hydra entry point; known errors end the process with status 2 and one line."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        try:
            text = render_help(config_name, [a for a in argv if not a.startswith("-")])
        except Exception as e:  # noqa: BLE001 — a bad override: one line, as for a run
            report(ConfigError(" ".join(str(e).split())))
            raise SystemExit(2) from None
        try:
            print(text, flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            sys.stdout = None  # no second error while Python closes stdout
        return
    try:
        check_split_values(argv)
        found = group_problems(argv)
        if not any(a.startswith("-") for a in argv):  # a plain run (not help, cfg, sweep)
            # The rest composed without the refused group options: every problem in one line.
            # (and without the settings under those groups, which the default option may lack)
            bad = {p.partition("=")[0] for p in found}
            rest = [a for a in argv if a.lstrip("+~").partition("=")[0].split(".")[0] not in bad]
            found += compose_problems(config_name, rest, check_values=bool(found))
        if found:
            raise ConfigError("; ".join(found))
    except ConfigError as e:
        report(e)
        raise SystemExit(2) from None
    threading.excepthook = _quiet_writer_threads
    if "-m" in argv or "--multirun" in argv:
        run_sweep(hydra_main)
    else:
        hydra_main()


def run_sweep(hydra_main: Callable[[], Any]) -> None:
    """A sweep, with what fails in Hydra's own code reported in one line too.

    A job's failure is the job's (one line, the sweep goes on: see ``handprop.trainer.train``); what
    fails outside any job (the sweeper's ``multirun.yaml`` on a full disk, a bad override)
    Hydra would print as a traceback or a few lines. With ``HYDRA_FULL_ERROR=1`` it raises
    instead, and the error is reported here: a refused write as one line naming the path,
    Hydra's own message joined into one line, anything else with its traceback.
    """
    from hydra.errors import CompactHydraException

    user = os.environ.get("HYDRA_FULL_ERROR")
    os.environ[FULL_ERROR_ENV] = "1" if user == "1" else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as e:  # noqa: BLE001 — every failure becomes one line (trace on request)
        if user == "1":
            raise
        # (an error at write time carries no file name: the sweep's folder is named)
        where = next(
            (a.split("=", 1)[1] for a in sys.argv if a.startswith("hydra.sweep.dir=")),
            "the sweep's folder (hydra.sweep.dir)",
        )
        err = as_machine_error(e, where)
        if isinstance(err, MachineError):
            report(err)
        elif "No trials are completed yet" in str(e):  # Optuna's, when no trial finished
            report(UserError(f"every trial of the search failed: see {where}/summary.json"))
        elif isinstance(e, CompactHydraException):
            cause = f" ({' '.join(str(e.__cause__).split())})" if e.__cause__ else ""
            report(UserError(" ".join(str(e).split()) + cause))
        else:
            report(e, verbose=True)
        raise SystemExit(1) from None
    finally:
        if user is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user
        os.environ.pop(FULL_ERROR_ENV, None)


def _quiet_writer_threads(args: Any) -> None:
    """No traceback when TensorBoard's writer thread dies on a failed write: the writer raises
    the same error in the main thread at its next call, which reports it in one line."""
    if os_error(args.exc_value) is None or not type(args.thread).__module__.startswith(
        "tensorboard."
    ):
        threading.__excepthook__(args)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Metrics as a small text table: one row per metric, one column per split."""
    splits = [s for s in ("train", "val", "test") if s in rows]
    names = list(dict.fromkeys(k for s in splits for k in rows[s]))
    w = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{w}}  " + "  ".join(f"{s:>12}" for s in splits)]
    for n in names:
        cells = [f"{rows[s][n]:>12.6g}" if n in rows[s] else f"{'-':>12}" for s in splits]
        lines.append(f"{n:<{w}}  " + "  ".join(cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# handprop-eval and handprop-predict: key=value settings without Hydra (which, with Lightning,
# would be most of their run time)
# --------------------------------------------------------------------------------------------
#: A setting that has no value until the command line gives one.
REQUIRED = "???"


def setting_value(text: str) -> Any:
    """A command-line value as Hydra reads a plain one: ``null``, ``true``/``false``, an
    integer, a float, else the text (quotes around it removed)."""
    import re

    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low == "null":
        return None
    if low in ("true", "false"):
        return low == "true"
    if re.fullmatch(r"[+-]?\d+", text.replace("_", "")):
        return int(text.replace("_", ""))
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", low):
        return float(text)
    return text


def parse_settings(command: str, argv: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``key=value`` arguments over ``defaults``; every unknown key and every argument that is
    not ``key=value`` is named in one :class:`ConfigError` line."""
    settings, found = dict(defaults), []
    keys = list(defaults)
    for arg in argv:
        key, eq, value = arg.lstrip("+").partition("=")
        if not eq or not key:
            found.append(f"{arg} is not a setting: write key=value, e.g. {keys[0]}=...")
        elif key not in defaults:
            best = closest_key(key, keys)
            found.append(
                f"{key} is not a setting of {command}" + (f"; did you mean {best}?" if best else "")
            )
        else:
            settings[key] = setting_value(value)
    if found:
        line = "; ".join(found)
        raise ConfigError(
            f"{line}{'' if line.endswith('?') else ';'} see {command} --help for the keys"
        )
    return settings


def required(settings: dict[str, Any], key: str) -> Any:
    """``settings[key]``, or a :class:`ConfigError` saying to add it."""
    if settings[key] == REQUIRED:
        raise ConfigError(f"{key} is required: add {key}=... to the command line")
    return settings[key]


def settings_text(settings: dict[str, Any]) -> str:
    """The settings as ``key: value`` lines (YAML; ``???`` for a required one not given)."""

    def text(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return str(v).lower()
        return str(v)

    return "".join(f"{k}: {text(v)}\n" for k, v in settings.items())


def run_command(
    command: str,
    help_text: str,
    defaults: dict[str, Any],
    fn: Callable[[dict[str, Any]], Any],
) -> None:
    """A command of ``key=value`` settings: ``--help`` (``help_text`` with ``$CONFIG``, the
    settings with the command line's), or ``fn(settings)``; any failure is one line and the
    exit status (2: a mistake to fix in the command)."""
    argv = sys.argv[1:]
    wants_help = "--help" in argv or "-h" in argv
    try:
        flags = [a for a in argv if a.startswith("-") and a not in ("--help", "-h")]
        if flags:
            raise ConfigError(
                f"{flags[0]} is not an option of {command}: it takes key=value settings and --help"
            )
        settings = parse_settings(command, [a for a in argv if not a.startswith("-")], defaults)
    except ConfigError as e:
        report(e)
        raise SystemExit(2) from None
    if wants_help:
        try:
            print(help_text.replace("$CONFIG", settings_text(settings)), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            sys.stdout = None
        return
    call_reporting(lambda: fn(settings), settings)
