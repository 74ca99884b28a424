"""``--help`` of every rmcli command: options in panels, examples, and the rest one flag away.

Each option sits in a panel: a setting's option in the panel its row of the settings table
names (:data:`rmcli.config.settings.PANELS`), another in the ``rich_help_panel`` its command
gives it (else "Options"). ``--help`` shows the panels in :data:`SHOWN_PANELS`, each setting's
help up to its first clause, and :data:`EXAMPLES`; ``--help-all`` (or ``RMCLI_HELP_ALL=1``)
adds the other panels (advanced, GPU, OpenVINO, Dask, tune- and serve-only options) and each
setting's full help with its environment variable.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import shutil
import sys
from typing import Any

from click import Context, HelpFormatter, Option, Parameter
from typer.core import TyperCommand, TyperGroup

from rmcli.config.settings import (
    HIDDEN_PANELS,
    PANELS,
    SETTINGS,
    Setting,
    flag_help,
    shown_default,
)

SHOWN_PANELS = ("Arguments", "Output", "Model", "Execution", "Options", "Service")
MAX_WIDTH = 100

# 3-5 examples for each command, shown at the end of its --help
EXAMPLES: dict[str, list[str]] = {
    "remove": [
        "rmcli remove photo.jpg                 # writes photo.out.png beside it",
        "rmcli remove photo.jpg -o cut.webp     # -o names the file; its suffix is the format",
        "rmcli remove shots/ -r -o out/         # a folder; -r keeps its sub-folders",
        "rmcli remove - -o - < in.jpg > out.png # stdin to stdout",
        "rmcli remove shots/ -o out/ -m isnet-general-use --bgcolor white --format jpg",
    ],
    "i": [
        "rmcli i in.jpg out.png                 # one image, rembg's flags",
        "rmcli i -m isnet-general-use -a in.jpg out.png",
        "rmcli i -om in.jpg mask.png            # the mask only",
        "cat in.jpg | rmcli i > out.png         # stdin to stdout",
    ],
    "p": [
        "rmcli p in/ out/                       # every image of in/ (and sub-folders)",
        "rmcli p -m u2net in/ out/",
        "rmcli p -w in/ out/                    # then watch in/ for new images",
        "rmcli p -w -d in/ out/                 # ... deleting each input once it is cut out",
    ],
    "b": [
        "ffmpeg -i clip.mp4 -f rawvideo -pix_fmt rgb24 - | rmcli b 1280 720 -o f/%05d.png",
        "... | rmcli b 640 480 --raw | ffplay -f rawvideo -pixel_format rgba -video_size 640x480 -",
        "... | rmcli b 640 480 -m u2net -o out/frame-%04d.png",
    ],
    "serve": [
        "rmcli serve                            # http://127.0.0.1:7000 (page, API, /metrics)",
        "rmcli serve --host 0.0.0.0 --port 8080 --models u2netp,isnet-general-use",
        "RMCLI_SERVE_TOKEN=secret rmcli serve   # the API asks for this bearer token",
        "rmcli serve --executor dask --scheduler tcp://host:8786",
    ],
    "bench": [
        "rmcli bench                            # the built-in set, 3 sample photos",
        "rmcli bench photos/ -n 5               # your images, 5 timed passes",
        "rmcli bench --backend cpu-pinned --backend openvino --set model=u2net",
        "rmcli bench --json > bench.json",
    ],
    "tune": [
        "rmcli tune                             # the fastest layout for the model setting",
        "rmcli tune --save                      # ... and keep it in the config file",
        "rmcli tune --model u2net --budget 120 photos/",
    ],
    "config": [
        "rmcli config list --sources            # each setting, its value and its layer",
        "rmcli config set intra_threads 4       # kept for every later command",
        "rmcli config get model",
        "rmcli config unset model_path          # the next layer down applies again",
    ],
    "models": [
        "rmcli models list                      # models, cached or not",
        "rmcli models pull u2net isnet-general-use",
        "rmcli models import u2net.onnx --as u2net   # weights fetched elsewhere (offline)",
        "rmcli models verify                    # re-hash the cache",
    ],
}


def help_all(ctx: Context) -> bool:
    """True when the whole help was asked for (``--help-all`` or ``RMCLI_HELP_ALL=1``)."""
    return bool(ctx.meta.get("rmcli.help_all")) or os.environ.get("RMCLI_HELP_ALL", "") not in (
        "",
        "0",
    )


def _show_all(ctx: Context, _param: Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    ctx.meta["rmcli.help_all"] = True
    print(ctx.get_help())
    ctx.exit()


def _help_all_option() -> Option:
    return Option(
        ["--help-all"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_show_all,
        help="Show every option (advanced, GPU, OpenVINO, Dask...) with its full help.",
    )


def _setting_of(param: Parameter) -> Setting | None:
    """The row an option was generated from (named, and helped, by it), if any."""
    key = str(param.name)
    if key in SETTINGS and getattr(param, "help", None) == flag_help(key):
        return SETTINGS[key]
    return None


def _panel(param: Parameter) -> str:
    setting = _setting_of(param)
    if setting is not None:
        return setting.panel
    return getattr(param, "rich_help_panel", None) or "Options"


def _brief(text: str) -> str:
    """A help text up to its first sentence, or a parenthesis that ends it."""
    head = re.split(r"\. (?=[A-Z])|; | \((?=[^()]*\)(?:\.?$|;))", text, maxsplit=1)[0]
    return head if head.endswith(".") else head + "."


def _option_help(param: Parameter, full: bool) -> str:
    setting = _setting_of(param)
    if setting is None:
        return inspect.cleandoc(getattr(param, "help", None) or "")
    if full:
        return flag_help(setting.key)
    default = shown_default(setting)  # a switch is off, a text empty, unless given
    shown = "" if default in ("off", "none", "unset") else f" [default: {default}]"
    return _brief(setting.help) + shown


def _metavar(param: Parameter) -> str:
    metavar = getattr(param, "metavar", None)
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if metavar:
        return metavar
    default = param.default
    if isinstance(default, int) and not isinstance(default, bool):
        return "N"
    return "NUMBER" if isinstance(default, float) else "TEXT"


def _names(param: Parameter, full: bool) -> str:
    opts = sorted(param.opts, key=lambda o: (o.startswith("--"), o))
    names = ", ".join(opts)
    if param.secondary_opts and full:
        names += " / " + ", ".join(param.secondary_opts)
    metavar = _metavar(param)
    return f"{names} {metavar}" if metavar else names


def _argument(param: Parameter) -> str:
    name = getattr(param, "metavar", None) or str(param.name).upper()
    if param.nargs == -1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


def render(command: Any, ctx: Context, width: int | None = None) -> str:
    """The help of ``command`` as text (coloured when stdout is a terminal)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    full = help_all(ctx)
    width = width or min(shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH)
    tty = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=tty, no_color=not tty,
                      highlight=False, emoji=False)  # fmt: skip
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    usage = " ".join([ctx.command_path, "[OPTIONS]", *(_argument(p) for p in arguments)])
    if isinstance(command, TyperGroup):
        usage += " COMMAND [ARGS]..."
    console.print(Text("Usage: ", style="bold") + Text(usage, style="bold"), end="\n\n")
    paragraphs = inspect.cleandoc(command.help or "").partition("\f")[0].split("\n\n")
    shown = paragraphs if full else paragraphs[:1]
    for paragraph in filter(None, shown):
        console.print(Text(" " + " ".join(paragraph.split()), style=""))
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in arguments:
        panels.setdefault("Arguments", []).append((_argument(param), param.help or ""))
    options = [p for p in params if p.param_type_name == "option"]
    hidden = 0 if full else sum(_panel(p) not in SHOWN_PANELS for p in options)
    for param in options:
        panel = _panel(param)
        if not full and panel not in SHOWN_PANELS:
            continue
        if "--help-all" in param.opts and not (hidden or full):
            continue  # nothing more to show
        panels.setdefault(panel, []).append((_names(param, full), _option_help(param, full)))
    order = ["Arguments", *PANELS, *HIDDEN_PANELS, "Options"]
    titles = sorted(panels, key=lambda t: order.index(t) if t in order else len(order))
    for title in titles:
        rows = panels[title]
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for name, text in rows:
            table.add_row(name, Text(text))
        console.print(Panel(table, title=title, title_align="left", border_style="dim"))
    if isinstance(command, TyperGroup):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                table.add_row(name, Text(sub.get_short_help_str(limit=width)))
        console.print(Panel(table, title="Commands", title_align="left", border_style="dim"))
    examples = EXAMPLES.get(ctx.command_path.partition(" ")[2], [])
    if examples:
        console.print(Text("Examples:", style="bold"))
        for line in examples:
            console.print(Text("  " + line), overflow="ellipsis", no_wrap=True)
    if hidden:
        console.print(
            Text(f"{hidden} more options (advanced, GPU, OpenVINO, Dask...): --help-all. ")
            + Text("Settings also come from RMCLI_<KEY> or the config file (rmcli config).")
        )
    return out.getvalue().rstrip("\n")


class HelpCommand(TyperCommand):
    """A command whose ``--help`` is :func:`render`'s, with ``--help-all``."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)
        if not any("--help-all" in p.opts for p in self.params):
            self.params.append(_help_all_option())
            params = super().get_params(ctx)
        return params

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        formatter.write(render(self, ctx) + "\n")


class HelpGroup(TyperGroup):
    """A command group whose ``--help`` is :func:`render`'s."""

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        formatter.write(render(self, ctx) + "\n")
