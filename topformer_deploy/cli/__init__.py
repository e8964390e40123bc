"""The ``topformer-deploy`` command line: a thin click layer over the public Python API.

Each command lives in its own module and is imported only when invoked (torch and the converters
are slow to import). Errors the tool knows about become one line on stderr and a non-zero exit;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from ..errors import TopformerDeployError

#: command name -> "module:function" under topformer_deploy.cli
COMMANDS = {
    "info": "info:info",
    "export": "export:export",
    "bench": "bench:bench",
    "devices": "devices:devices",
    "breakdown": "breakdown:breakdown",
    "gate": "gate:gate",
    "eval": "evaluate:evaluate",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._spec_exists(name)]

    def get_command(self, ctx, name):
        spec = COMMANDS.get(name)
        if spec is None or not self._spec_exists(name):
            return None
        module, attr = spec.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(f"{__name__}.{module}") is not None

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()  # where signals can be handled
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        try:
            return super().invoke(ctx)
        except TopformerDeployError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # bad options of a subcommand: one line too, with where to look
            if isinstance(exc, click.exceptions.NoArgsIsHelpError) or (ctx.obj and ctx.obj.get("debug")):
                raise
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): the cleanups have run
            terminated = isinstance(exc, Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (staging folders, device temp dirs) runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="topformer-deploy")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Export TopFormer to TFLite/ONNX and measure its latency on Arm devices."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
