"""The ``roost`` command: ``roost serve`` runs the broker; ``roost pub``/``roost sub`` come
from :mod:`roost.cli_clients`, ``roost cluster up``/``status`` from :mod:`roost.cli_cluster`,
``roost passwd`` from :mod:`roost.cli_passwd`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import fields
from typing import Any

from roost.config import FIELD_TYPES, Settings, load_settings
from roost.errors import ConfigError, RoostError
from roost.logs import configure_logging
from roost.worker_settings import worker_count

CONFIG_ERROR_STATUS = 2  # the status argparse uses for usage errors

# argparse options for a setting's flag, by the setting's type.
_FLAG_OPTIONS: dict[type, dict[str, Any]] = {
    bool: {"action": argparse.BooleanOptionalAction},
    int: {"type": int, "metavar": "N"},
    str: {"type": str, "metavar": "TEXT"},
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--name-with-dashes`` flag per Settings field; unset flags stay None."""
    group = parser.add_argument_group(
        "settings", "override the config file and ROOST_<NAME> environment variables"
    )
    for field in fields(Settings):
        if field.name not in FIELD_TYPES:
            continue  # [[listeners]]: TOML only
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            default=None,
            help=f"default: {field.default}",
            **_FLAG_OPTIONS[FIELD_TYPES[field.name]],
        )


def _serve(args: argparse.Namespace) -> int:
    """Load settings (file < env < flags), set up logging and run the broker."""
    try:
        settings = load_settings(vars(args), os.environ, args.config)
    except ConfigError as exc:
        print(f"roost: error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    configure_logging(settings.log_level, settings.log_format, settings.log_levels)
    if args.worker is not None:  # one of the processes of --workers N
        from roost.workers import stop_with_parent

        stop_with_parent(int(args.worker.partition(":")[2]))
    elif worker_count(settings) > 1:
        return _serve_workers(settings)
    from roost.broker import run

    return run(settings)


def _serve_workers(settings: Settings) -> int:
    """``workers`` above 1: run the worker processes (docs/cluster.md)."""
    from roost.workers import run_workers

    try:
        return run_workers(settings)
    except ConfigError as exc:
        print(f"roost: error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_STATUS
    except RoostError as exc:  # no Valkey to start, or it did not start
        print(f"roost: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # SIGINT or SIGTERM before the workers ran
        return 0


COMMAND_MODULES = ("roost.cli_clients", "roost.cli_cluster", "roost.cli_passwd")


def _register_commands(subparsers: Any) -> None:
    """Add the commands of each of COMMAND_MODULES; the broker runs without them."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """The ``roost`` parser; each subcommand sets ``func(args) -> int``."""
    parser = argparse.ArgumentParser(prog="roost", description="Roost MQTT 3.1.1/5.0 broker")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = subparsers.add_parser("serve", help="run the broker")
    serve.add_argument("--config", metavar="FILE", help="TOML file of settings")
    # Given by the parent of --workers N to each worker process: INDEX:PARENT PID.
    serve.add_argument("--worker", help=argparse.SUPPRESS)
    _add_setting_flags(serve)
    serve.set_defaults(func=_serve)
    _register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``roost`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status
