"""The settings table and its layered resolution: flags > environment > tuned > file > defaults.

Every value carries its :class:`Layer` (what code asks about, through ``Settings.layer`` and
``Settings.given``) and a display text for people: ``flag --x``, ``env RMCLI_X``,
``file <path>``, ``default``...
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmcli.errors import ConfigError


class Layer(enum.Enum):
    """Where a resolved value came from; behaviour asks this, never the display text."""

    DEFAULT = "default"  # the table's default
    FILE = "file"  # the config file
    TUNED = "tuned"  # measured by ``rmcli tune`` and saved
    ENV = "env"  # an RMCLI_* environment variable
    FLAG = "flag"  # a command-line flag
    API = "API"  # a program: Remover(...), create_app(...), Settings.with_values
    DERIVED = "derived"  # set by rmcli from other values (a core budget, a service's slots)


# the layers a person or program chose a value in (not the default, not derived by rmcli)
GIVEN = frozenset({Layer.FILE, Layer.TUNED, Layer.ENV, Layer.FLAG, Layer.API})


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("is not a boolean (true/false)")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("is not an integer")
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError("is not an integer") from None


def _parse_seconds(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("is not a number of seconds")
    try:
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        raise ValueError("is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number of seconds above 0")
    return value


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("is not a string")
    return raw.strip()


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("is not a number")
    try:
        value = float(raw if isinstance(raw, int | float) else str(raw).strip())
    except ValueError:
        raise ValueError("is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("is not a finite number")
    return value


def _parse_path(raw: Any) -> str:
    if not isinstance(raw, str | os.PathLike):
        raise ValueError("is not a path")
    return os.fspath(raw).strip()


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    type_name: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    aliases: tuple[str, ...] = ()
    session: bool = False  # True when the value changes the ONNX Runtime session
    flag: str = ""  # the ``rmcli remove`` option, e.g. "--format" (default: --<key-dashed>)
    short: str = ""  # its short form, e.g. "-m"
    metavar: str = ""  # what --help shows for the value (default: from the type)
    command: str = "remove"  # the command whose option sets it ("": config file and env only)
    also: tuple[str, ...] = ()  # other commands with the same option (serve: a model's settings)
    panel: str = "Advanced"  # the --help panel of its option (one of PANELS)

    @property
    def option(self) -> str:
        """The long command-line option that sets this key."""
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def is_switch(self) -> bool:
        """True for on/off settings (``--x/--no-x``)."""
        return self.parse is _parse_bool

    @property
    def env(self) -> str:
        return "RMCLI_" + self.key.upper()

    @property
    def env_names(self) -> tuple[str, ...]:
        """Environment variables read for this key, strongest first."""
        return (self.env, *self.aliases)

    def env_override(self, env: Mapping[str, str] | None = None) -> str | None:
        """The environment variable that sets this key now (and so hides the file), if any."""
        env = os.environ if env is None else env
        return next((name for name in self.env_names if env.get(name, "") != ""), None)

    def convert(self, raw: Any, origin: str, layer: Layer = Layer.API) -> Any:
        """Parse and validate ``raw`` from ``origin`` (a source such as ``env RMCLI_X``) in
        ``layer``.

        A :class:`ConfigError` names where the value came from, the value and what is wrong,
        e.g. ``RMCLI_INTRA_THREADS='four' is not an integer``.
        """
        try:
            value = self.parse(raw)
            if self.choices and value not in self.choices:
                raise ValueError(f"is not one of {', '.join(self.choices)}")
            if isinstance(value, int | float) and not isinstance(value, bool):
                if self.minimum is not None and value < self.minimum:
                    raise ValueError(f"is below the minimum {self.minimum}")
                if self.maximum is not None and value > self.maximum:
                    raise ValueError(f"is above the maximum {self.maximum}")
        except ValueError as exc:
            raise ConfigError(self._problem(raw, origin, layer, str(exc))) from None
        return value

    def _problem(self, raw: Any, origin: str, layer: Layer, reason: str) -> str:
        where = origin.partition(" ")[2]  # the variable, flag or file after "env ", "flag "...
        if layer is Layer.ENV:
            alias = "" if where == self.env else f" (setting {self.key})"
            return f"{where}={raw!r} {reason}{alias}"
        if layer is Layer.FLAG:
            return f"{where}={raw!r} {reason}"
        if layer is Layer.FILE:
            return f"{where}: {self.key}={raw!r} {reason}"
        return f"{self.key}={raw!r} {reason}" + (f" (from {origin})" if origin else "")


# the --help panels of the settings' options, in order (rmcli.cli.help): ``--help`` shows
# Output, Model, Execution (and serve's Service); ``--help-all`` all of them. The hidden ones
# apply to one backend, executor or command only: ``rmcli remove -v`` prints their settings
# only when the run uses them.
PANELS = ("Output", "Model", "Execution", "Advanced")
HIDDEN_PANELS = ("GPU", "OpenVINO", "Dask", "Tuning", "Service")

# the families of custom weights (rmcli.engine.families.FAMILIES) and the u2net_cloth_seg
# categories; kept here so the settings need not import the model code (tests/test_config.py
# keeps them equal)
MODEL_FAMILIES = ("u2net", "isnet", "birefnet")
CLOTH_CATEGORIES = ("upper", "lower", "full", "attire")
MAX_THREADS = 256


def _int_or_auto(raw: Any) -> int | str:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    try:
        value = _parse_int(raw)
    except ValueError:
        raise ValueError("is not an integer or 'auto'") from None
    if value < 1:
        raise ValueError("must be >= 1 or 'auto'")
    if value > MAX_THREADS:
        raise ValueError(f"is above the maximum {MAX_THREADS}")
    return value


def _parse_color(raw: Any) -> str:
    from rmcli.colors import parse_color

    text = _parse_str(raw)
    if text:
        parse_color(text)  # raises ValueError with the reason
    return text


def _cpu_list(raw: Any) -> str:
    """A CPU list like ``0-3,8`` naming only CPUs this process may use ('' means no pinning)."""
    from rmcli.cpus import allowed_cpus, check_binding

    text = _parse_str(raw)
    if text:
        check_binding(text, allowed_cpus())
    return text


def _setting(key: str, parse: Callable[[Any], Any], default: Any, help: str, **kw: Any) -> Setting:
    names = {_parse_int: "integer", _parse_bool: "boolean", _parse_str: "string"}
    names[_parse_path] = "path"
    names[_parse_float] = "number"
    type_name = kw.pop("type_name", names.get(parse, "string"))
    return Setting(key, parse, default, help, type_name, **kw)


SERVE_SETTINGS: list[Setting] = [
    _setting(
        "serve_host",
        _parse_str,
        "127.0.0.1",
        "Address to listen on.",
        command="serve",
        panel="Service",
        flag="--host",
    ),
    _setting(
        "serve_port",
        _parse_int,
        7000,
        "TCP port (0: any free port).",
        minimum=0,
        maximum=65535,
        command="serve",
        panel="Service",
        flag="--port",
    ),
    _setting(
        "serve_slots",
        _parse_int,
        0,
        "Inferences run at once; each gets cores / slots intra-op threads "
        "(0: one slot per two cores; with --executor dask, one per worker thread).",
        minimum=0,
        maximum=1024,
        command="serve",
        panel="Service",
        flag="--slots",
    ),
    _setting(
        "serve_heavy_slots",
        _parse_int,
        1,
        "Slots one request of a heavy model (input of 1024x1024 pixels or more) takes at "
        "once; its session gets their intra-op threads (1: one slot, as any model).",
        minimum=1,
        maximum=1024,
        command="serve",
        panel="Service",
        flag="--heavy-slots",
    ),
    _setting(
        "serve_queue",
        _parse_int,
        32,
        "Requests waiting for an inference slot; beyond it 503 + Retry-After.",
        minimum=0,
        maximum=100_000,
        command="serve",
        panel="Service",
        flag="--queue",
    ),
    _setting(
        "serve_codec_threads",
        _parse_int,
        0,
        "Threads decoding and encoding images (0: the usable cores).",
        minimum=0,
        maximum=MAX_THREADS,
        command="serve",
        panel="Service",
        flag="--codec-threads",
    ),
    _setting(
        "serve_deadline",
        _parse_seconds,
        30.0,
        "Seconds a request may take once its body has arrived (a URL fetch and the queue "
        "included); later it gets 503.",
        type_name="seconds",
        command="serve",
        panel="Service",
        flag="--deadline",
        metavar="SECONDS",
    ),
    _setting(
        "serve_retry_after",
        _parse_int,
        1,
        "Seconds sent in Retry-After with a 503.",
        minimum=0,
        maximum=3600,
        command="serve",
        panel="Service",
        flag="--retry-after",
    ),
    _setting(
        "serve_max_body",
        _parse_int,
        50 * 1024 * 1024,
        "Largest request body in bytes (413 beyond).",
        minimum=1,
        maximum=1 << 40,
        command="serve",
        panel="Service",
        flag="--max-body",
        metavar="BYTES",
    ),
    _setting(
        "serve_models",
        _parse_str,
        "",
        "Comma-separated models requests may ask for, fetched at start if missing (empty: "
        "any model whose weights are here).",
        command="serve",
        panel="Service",
        flag="--models",
    ),
    _setting(
        "serve_max_sessions",
        _parse_int,
        4,
        "Sessions kept loaded; the least recently used one goes first.",
        minimum=1,
        maximum=1000,
        command="serve",
        panel="Service",
        flag="--max-sessions",
    ),
    _setting(
        "serve_memory_budget",
        _parse_int,
        0,
        "Bytes the loaded sessions and their inferences may hold; sessions are admitted and "
        "evicted by their measured memory (0: half the cgroup memory limit, else half the "
        "memory available at start). With --executor dask, each worker's own budget.",
        minimum=0,
        maximum=1 << 50,
        command="serve",
        panel="Service",
        flag="--memory-budget",
        metavar="BYTES",
    ),
    _setting(
        "serve_session_ttl",
        _parse_seconds,
        600.0,
        "Seconds an unused session stays loaded.",
        type_name="seconds",
        command="serve",
        panel="Service",
        flag="--session-ttl",
        metavar="SECONDS",
    ),
    _setting(
        "serve_warmup",
        _parse_bool,
        True,
        "Build the default model's session and run it once before /readyz is ok.",
        command="serve",
        panel="Service",
        flag="--warmup",
    ),
    _setting(
        "serve_grace",
        _parse_seconds,
        10.0,
        "On SIGTERM or Ctrl-C, seconds in-flight requests get to finish.",
        type_name="seconds",
        command="serve",
        panel="Service",
        flag="--grace",
        metavar="SECONDS",
    ),
    _setting(
        "serve_token",
        _parse_str,
        "",
        "Bearer token required by the API and /metrics (empty: none).",
        command="",
        panel="Service",
    ),
    _setting(
        "serve_cors_origins",
        _parse_str,
        "",
        "Comma-separated origins allowed by CORS, or * (empty: CORS off).",
        command="serve",
        panel="Service",
        flag="--cors-origins",
    ),
    _setting(
        "serve_url_fetch",
        _parse_bool,
        False,
        "Allow GET /api/remove?url=... (public http(s) addresses only).",
        command="serve",
        panel="Service",
        flag="--url-fetch",
    ),
    _setting(
        "serve_url_allow",
        _parse_str,
        "",
        "Comma-separated networks (CIDR) url fetching may reach although private.",
        command="serve",
        panel="Service",
        flag="--url-allow",
    ),
    _setting(
        "serve_url_max_bytes",
        _parse_int,
        20 * 1024 * 1024,
        "Largest image fetched from a URL, in bytes.",
        minimum=1,
        maximum=1 << 40,
        command="serve",
        panel="Service",
        flag="--url-max-bytes",
        metavar="BYTES",
    ),
    _setting(
        "serve_url_timeout",
        _parse_seconds,
        10.0,
        "Seconds a whole URL fetch may take, redirects included (and within the deadline).",
        type_name="seconds",
        maximum=3600,
        command="serve",
        flag="--url-timeout",
        metavar="SECONDS",
    ),
    _setting(
        "serve_fetch_models",
        _parse_bool,
        False,
        "Let requests name models whose weights are not here yet: fetched once, one at a "
        "time, in the background (off: only cached models, the default and --models).",
        command="serve",
        flag="--fetch-models",
    ),
    _setting(
        "serve_header_timeout",
        _parse_seconds,
        10.0,
        "Seconds a client gets to send a request's headers (the connection is closed after).",
        type_name="seconds",
        maximum=3600,
        command="serve",
        flag="--header-timeout",
        metavar="SECONDS",
    ),
    _setting(
        "serve_body_timeout",
        _parse_seconds,
        60.0,
        "Seconds a client gets to send a request's body (408 after).",
        type_name="seconds",
        maximum=86400,
        command="serve",
        flag="--body-timeout",
        metavar="SECONDS",
    ),
    _setting(
        "serve_min_rate",
        _parse_int,
        1024,
        "Bytes per second a body must arrive at, after its first 2 s (408 below; 0: no minimum).",
        minimum=0,
        maximum=1 << 30,
        command="serve",
        flag="--min-rate",
        metavar="BYTES",
    ),
    _setting(
        "serve_client_connections",
        _parse_int,
        32,
        "Open connections one client address may hold; beyond it 503 and the connection closed.",
        minimum=1,
        maximum=100_000,
        command="serve",
        flag="--client-connections",
    ),
    _setting(
        "serve_allowed_hosts",
        _parse_str,
        "",
        "Comma-separated Host header names accepted, or * (empty: on a loopback address, "
        "localhost and loopback addresses only; elsewhere any).",
        command="serve",
        flag="--allowed-hosts",
    ),
    _setting(
        "serve_access_log",
        _parse_bool,
        True,
        "Log one line per request (logger rmcli.serve.access).",
        command="serve",
        panel="Service",
        flag="--access-log",
    ),
]

SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        _setting(
            "model",
            _parse_str,
            "u2netp",
            "Model used to compute masks.",
            session=True,
            short="-m",
            metavar="NAME",
            panel="Model",
            also=("serve",),
        ),
        _setting(
            "model_path",
            _parse_path,
            "",
            "Custom ONNX weights used instead of --model (no checksum; needs model_family).",
            session=True,
            metavar="FILE",
            panel="Model",
            also=("serve",),
        ),
        _setting(
            "model_family",
            _parse_str,
            "",
            "Family of the model_path weights: input size, normalisation, output handling.",
            choices=MODEL_FAMILIES,
            metavar="FAMILY",
            panel="Model",
            also=("serve",),
        ),
        _setting(
            "cloth_category",
            _parse_str,
            "attire",
            "Clothes masked by u2net_cloth_seg (attire: all of them).",
            choices=CLOTH_CATEGORIES,
            metavar="CATEGORY",
        ),
        _setting(
            "backend",
            _parse_str,
            "cpu-pinned",
            "Execution backend.",
            session=True,
            short="-b",
            metavar="NAME",
            panel="Execution",
            also=("serve",),
        ),
        _setting(
            "intra_threads",
            _int_or_auto,
            None,
            "Threads inside one operator (unset: the cores this process may use; auto: the "
            "idle share of them, measured when the session is built).",
            type_name="integer|auto",
            aliases=("INTRA_OP_NUM_THREADS",),
            session=True,
            metavar="N|auto",
            panel="Execution",
            also=("serve",),
        ),
        _setting(
            "inter_threads",
            _parse_int,
            None,
            "Threads running operators in parallel (parallel execution mode only).",
            minimum=1,
            aliases=("INTER_OP_NUM_THREADS",),
            session=True,
            maximum=MAX_THREADS,
            metavar="N",
            also=("serve",),
        ),
        _setting(
            "cpu_binding",
            _cpu_list,
            "",
            "Logical CPUs to pin intra-op threads to, e.g. '0-3,8' (empty: no pinning).",
            type_name="CPU list",
            aliases=("CPU_BINDING",),
            session=True,
            metavar="CPUS",
            panel="Execution",
            also=("serve",),
        ),
        _setting(
            "execution_mode",
            _parse_str,
            "sequential",
            "ONNX Runtime execution mode.",
            choices=("sequential", "parallel"),
            session=True,
            metavar="MODE",
            also=("serve",),
        ),
        _setting(
            "allow_spinning",
            _parse_bool,
            True,
            "Let idle worker threads spin during a run (they stop after each run).",
            session=True,
            also=("serve",),
        ),
        _setting(
            "shared_threadpool",
            _parse_bool,
            False,
            "All sessions of the process share one ONNX Runtime thread pool (sized once).",
            session=True,
            also=("serve",),
        ),
        _setting(
            "graph_optimization",
            _parse_str,
            "all",
            "ONNX Runtime graph optimisation level.",
            choices=("disable", "basic", "extended", "all"),
            session=True,
            metavar="LEVEL",
            also=("serve",),
        ),
        _setting(
            "cpu_mem_arena",
            _parse_bool,
            True,
            "ONNX Runtime's CPU memory arena; off: a 1024x1024 model needs about a quarter less "
            "peak memory, for up to a quarter more time per inference.",
            session=True,
            also=("serve",),
        ),
        _setting(
            "executor",
            _parse_str,
            "local",
            "Where batches, and rmcli serve's inferences, run: local, dask (rmcli[dask]), ...",
            metavar="NAME",
            panel="Execution",
            also=("serve",),
        ),
        _setting(
            "inflight",
            _parse_int,
            2,
            "Images in flight at once in a local batch (each image's encoding gets "
            "cores / inflight threads); 1: one image after another.",
            minimum=1,
            maximum=64,
            metavar="N",
            panel="Execution",
        ),
        _setting(
            "dask_scheduler",
            _parse_str,
            "",
            "Dask scheduler address, e.g. tcp://host:8786 (empty: a local cluster).",
            flag="--scheduler",
            metavar="ADDRESS",
            panel="Dask",
            also=("serve",),
        ),
        _setting(
            "models_dir",
            _parse_str,
            "",
            "Folder of cached model weights (empty: default).",
            metavar="DIR",
            also=("serve",),
        ),
        _setting(
            "offline",
            _parse_bool,
            False,
            "Never download weights; say where to place them.",
            also=("serve",),
        ),
        _setting(
            "output_format",
            _parse_str,
            "png",
            "Format of written images; clips: webm (VP9 with alpha, the default for videos), "
            "mov (ProRes 4444 with alpha), mp4 (H.264, no alpha), animated webp or gif, "
            "png/jpg (a folder of numbered frames). See docs/video.md.",
            choices=("png", "webp", "jpg", "webm", "mov", "mp4", "gif"),
            flag="--format",
            metavar="FORMAT",
            panel="Output",
        ),
        _setting(
            "png_compression",
            _parse_int,
            1,
            "PNG compression level 0-9 (lossless either way; higher is smaller and slower).",
            minimum=0,
            maximum=9,
            metavar="0-9",
        ),
        _setting(
            "video_smoothing",
            _parse_bool,
            False,
            "Clips: smooth masks over time where they barely change (less flicker, moving "
            "edges kept).",
        ),
        _setting(
            "max_pixels",
            _parse_int,
            50_000_000,
            "Largest input accepted, in pixels (checked from the header, before decoding).",
            minimum=1,
            maximum=1_000_000_000,
            metavar="N",
            also=("serve",),
        ),
        _setting(
            "bgcolor",
            _parse_color,
            "",
            "Background colour of outputs: a name, #rrggbb[aa] or r,g,b[,a] (empty: transparent;"
            " JPEG is flattened onto white).",
            type_name="colour",
            metavar="COLOUR",
            panel="Output",
        ),
        _setting(
            "premultiplied",
            _parse_bool,
            False,
            "Cut-out colour scaled by alpha, pixel-identical to rembg (default: straight colour).",
            panel="Output",
        ),
        _setting(
            "crop_threshold",
            _parse_int,
            10,
            "With --crop: alpha values up to this (0-254) count as background.",
            minimum=0,
            maximum=254,
            metavar="0-254",
        ),
        _setting(
            "crop_margin",
            _parse_int,
            0,
            "With --crop: pixels kept around the box.",
            minimum=0,
            maximum=10_000,
            flag="--margin",
            metavar="PX",
            panel="Output",
        ),
        _setting(
            "alpha_matting_foreground_threshold",
            _parse_int,
            240,
            "Alpha matting: mask values above this are sure foreground.",
            minimum=0,
            maximum=255,
            short="-af",
            metavar="0-255",
        ),
        _setting(
            "alpha_matting_background_threshold",
            _parse_int,
            10,
            "Alpha matting: mask values below this are sure background.",
            minimum=0,
            maximum=255,
            short="-ab",
            metavar="0-255",
        ),
        _setting(
            "alpha_matting_erode_size",
            _parse_int,
            10,
            "Alpha matting: size of the square eroding the sure regions (0: none).",
            minimum=0,
            maximum=100,
            short="-ae",
            metavar="PX",
        ),
        _setting(
            "matting_max_pixels",
            _parse_int,
            1_000_000,
            "Alpha matting of larger images runs on a copy scaled down to this many pixels.",
            minimum=10_000,
            maximum=100_000_000,
            metavar="N",
            also=("serve",),
        ),
        _setting(
            "post_process_mask",
            _parse_bool,
            False,
            "Smooth the mask like rembg -ppm: opening, Gaussian blur, threshold (hard edges).",
            short="-ppm",
            panel="Output",
        ),
        _setting(
            "skip_existing",
            _parse_bool,
            False,
            "Leave inputs whose output file already exists (resume a batch).",
            panel="Output",
        ),
        _setting(
            "device_id",
            _parse_int,
            0,
            "GPU device for cuda-hybrid.",
            minimum=0,
            session=True,
            maximum=64,
            metavar="N",
            panel="GPU",
            also=("serve",),
        ),
        _setting(
            "gpu_mem_limit",
            _parse_int,
            0,
            "GPU memory arena limit for cuda-hybrid, in MiB (0: no limit).",
            minimum=0,
            session=True,
            maximum=1_048_576,
            metavar="MIB",
            panel="GPU",
            also=("serve",),
        ),
        _setting(
            "precision",
            _parse_str,
            "fp32",
            "Numeric precision of inference: fp32 (exact masks) or bf16 (backend openvino, on "
            "CPUs with native bf16).",
            choices=("fp32", "bf16"),
            session=True,
            panel="OpenVINO",
            also=("serve",),
        ),
        _setting(
            "openvino_cache_dir",
            _parse_path,
            "",
            "Folder where backend openvino keeps compiled models (empty: openvino/ in the rmcli "
            "cache folder; off: no cache).",
            session=True,
            metavar="DIR",
            panel="OpenVINO",
            also=("serve",),
        ),
        _setting(
            "openvino_streams",
            _parse_int,
            1,
            "OpenVINO streams of backend openvino: inferences it runs at once (1 suits one "
            "image at a time; more only for concurrent callers).",
            minimum=1,
            maximum=64,
            session=True,
            metavar="N",
            panel="OpenVINO",
            also=("serve",),
        ),
        _setting(
            "mask_error_budget",
            _parse_float,
            2.0,
            "rmcli tune keeps only layouts whose masks differ from fp32 on the CPU provider by "
            "at most this mean, in 1/255 units.",
            minimum=0,
            metavar="N",
            panel="Tuning",
        ),
        _setting(
            "strict_device",
            _parse_bool,
            False,
            "Fail instead of falling back to the CPU when the GPU or OpenVINO is not used.",
            session=True,
            also=("serve",),
        ),
        *SERVE_SETTINGS,
    ]
}


def flag_help(key: str) -> str:
    """Help of the flag that sets ``key``: the table's text, default, choices, variables."""
    setting = SETTINGS[key]
    facts = [f"default: {shown_default(setting)}"]
    if setting.choices:
        facts.append(f"one of: {', '.join(setting.choices)}")
    elif setting.minimum is not None and setting.maximum is not None:
        facts.append(f"{setting.minimum}-{setting.maximum}")
    facts.append(f"env: {', '.join(setting.env_names)}")
    return f"{setting.help} [{'; '.join(facts)}]"


def shown_default(setting: Setting) -> str:
    if setting.default is None:
        return "unset"
    if setting.default == "":
        return "none"
    if isinstance(setting.default, bool):
        return "on" if setting.default else "off"
    return str(setting.default)


def format_value(value: Any) -> str:
    """A value as TOML writes it (``"u2netp"``, ``4``, ``true``); ``(unset)`` for None."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list | dict):
        import json

        return json.dumps(value, default=str)
    return str(value)


@dataclass(frozen=True)
class Value:
    """A resolved setting: its value, the layer it came from and, for people, where exactly
    (``flag --model``, ``env RMCLI_MODEL``, ``file <path>``, ``Remover(model=...)``)."""

    value: Any
    source: str
    layer: Layer


@dataclass(frozen=True)
class Settings(Mapping[str, Any]):
    """Resolved settings: a mapping of values; ``source(key)`` says where one came from,
    ``overridden`` which values a layer gave that are not in effect, and why."""

    values: dict[str, Value]
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    overridden: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def source(self, key: str) -> str:
        """Where ``key``'s value came from, for messages (``flag --model``, ``default``)."""
        return self.values[key].source

    def layer(self, key: str) -> Layer:
        """The layer ``key``'s value came from."""
        return self.values[key].layer

    def given(self, key: str) -> bool:
        """True when a person or program chose ``key``'s value (file, tuned, env, flag, API),
        False for the default or a value rmcli derived from others."""
        return self.values[key].layer in GIVEN

    def line(self, key: str) -> str:
        """``key = value (source)``, then what was set but is not in effect, if anything."""
        value = self.values[key]
        text = f"{key} = {format_value(value.value)} ({value.source})"
        return f"{text}; not in effect: {self.overridden[key]}" if key in self.overridden else text

    def lines(self, keys: Iterable[str] | None = None) -> list[str]:
        """:meth:`line` for ``keys`` (default: every setting), as ``rmcli remove -v`` prints."""
        return [self.line(key) for key in (self.values if keys is None else keys)]

    def plugin(self, name: str) -> dict[str, Any]:
        """The free-form ``[plugins.<name>]`` table of the config file (empty when absent)."""
        return dict(self.plugins.get(name, {}))

    def session_key(self) -> tuple[tuple[str, Any], ...]:
        """The values that shape an ONNX Runtime session, for caching sessions."""
        return tuple((k, v.value) for k, v in sorted(self.values.items()) if SETTINGS[k].session)

    def with_values(
        self, source: str = "code", layer: Layer = Layer.API, /, **values: Any
    ) -> Settings:
        """A copy with some values replaced (validated), from ``layer`` (a program's choice
        unless said otherwise) and shown as coming from ``source``."""
        new = dict(self.values)
        for key, raw in values.items():
            setting = known_setting(key)
            new[key] = Value(setting.convert(raw, source, layer), source, layer)
        return Settings(new, self.plugins, self.overridden)

    def derived(self, source: str, /, **values: Any) -> Settings:
        """A copy with values rmcli derived from others (``source`` says how)."""
        return self.with_values(source, Layer.DERIVED, **values)


def takes(command: str, key: str) -> bool:
    """True when ``rmcli <command>`` has a flag for setting ``key``."""
    setting = SETTINGS[key]
    return command == setting.command or command in setting.also


def known_setting(key: str) -> Setting:
    """The row for ``key``; an unknown key is a ConfigError with a "did you mean" suggestion."""
    try:
        return SETTINGS[key]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(key, SETTINGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown setting {key!r}{hint}") from None


def resolve(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
    flags_layer: Layer = Layer.FLAG,
) -> Settings:
    """Resolve every setting: ``flags`` (None = not given) > ``env`` > config file > default.

    ``flags`` maps a key to its value, or to ``(value, "flag --name")`` to name the flag;
    ``flags_layer`` is :attr:`Layer.API` when a program, not a command line, gives them.
    """
    from rmcli.config.file import LAYOUTS, MODELS, config_path, read_config_file  # lazily

    env = os.environ if env is None else env
    path = config_path(env) if path is None else path
    data = read_config_file(path)
    data.pop(MODELS, None)  # [models.NAME] tables: custom models, read by the model registry
    plugin_tables = data.pop("plugins", {})
    layouts = data.pop(LAYOUTS, {})
    if not isinstance(plugin_tables, dict) or not all(
        isinstance(table, dict) for table in plugin_tables.values()
    ):
        raise ConfigError(f"{path}: plugins must hold [plugins.<name>] tables")
    for key in data:
        if key not in SETTINGS:
            try:
                known_setting(key)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    flags = flags or {}
    for key in flags:
        known_setting(key)
    values: dict[str, Value] = {}
    for key, setting in SETTINGS.items():
        flag = flags.get(key)
        if isinstance(flag, tuple):
            raw, origin = flag
        else:
            raw, origin = flag, "flag --" + key.replace("_", "-")
        if raw is not None:
            values[key] = Value(setting.convert(raw, origin, flags_layer), origin, flags_layer)
            continue
        name = setting.env_override(env)
        if name is not None:
            origin = f"env {name}"
            values[key] = Value(setting.convert(env[name], origin, Layer.ENV), origin, Layer.ENV)
        elif key in data:
            origin = f"file {path}"
            values[key] = Value(setting.convert(data[key], origin, Layer.FILE), origin, Layer.FILE)
        else:
            values[key] = Value(setting.default, "default", Layer.DEFAULT)
    overridden = resolve_groups(values)  # the model decides which layout is tuned
    apply_tuned_layout(values, layouts, path)
    overridden.update(resolve_groups(values))  # a tuned backend leads its group too
    return Settings(values, plugin_tables, overridden)


# how strongly each layer holds its value (lower wins): flags and programs > environment >
# a model's tuned [layout.<model>] table > the config file > defaults and derived values
RANK = {Layer.FLAG: 0, Layer.API: 0, Layer.ENV: 1, Layer.TUNED: 2, Layer.FILE: 3,
        Layer.DEFAULT: 4, Layer.DERIVED: 4}  # fmt: skip


@dataclass(frozen=True)
class Group:
    """Settings that resolve as one: the strongest layer that sets a ``leader`` gives the
    whole group, so what weaker layers set for the other members is not in effect (they take
    their defaults). A member that is not a leader (``model_family``, ``precision``) only
    refines the leader, so given alone it applies to the leader from a weaker layer."""

    leaders: tuple[str, ...]
    members: tuple[str, ...]


GROUPS = (
    Group(leaders=("model", "model_path"), members=("model", "model_path", "model_family")),
    Group(leaders=("backend",), members=("backend", "precision")),
)


def resolve_groups(values: dict[str, Value]) -> dict[str, str]:
    """Apply :data:`GROUPS` to the values ``resolve`` chose, in place.

    Returns, for each member that a weaker layer set but the group rule put out of effect (or
    that another member makes moot), the reason, e.g. ``"x.onnx" from file /c.toml: flag
    --model sets the model``.
    """
    overridden: dict[str, str] = {}
    for group in GROUPS:
        top = min(RANK[values[key].layer] for key in group.leaders)
        if top == RANK[Layer.DEFAULT]:
            continue
        leader = next(key for key in group.leaders if RANK[values[key].layer] == top)
        for key in group.members:
            if top < RANK[values[key].layer] < RANK[Layer.DEFAULT]:
                lost = values[key]
                values[key] = Value(SETTINGS[key].default, "default", Layer.DEFAULT)
                overridden[key] = (
                    f"{format_value(lost.value)} from {lost.source}, because "
                    f"{values[leader].source} sets {leader} (related settings resolve as one)"
                )
    if values["model_path"].value and values["model"].layer is not Layer.DEFAULT:
        overridden["model"] = "model_path is set: its custom weights are used instead"
    return overridden


# the keys `rmcli tune --save` stores per model, in a [layout.<model>] table
TUNED_KEYS = (
    "backend",
    "precision",
    "intra_threads",
    "execution_mode",
    "inter_threads",
    "allow_spinning",
    "cpu_binding",
)


def layout_name(model: str, model_path: str = "") -> str:
    """The ``[layout.<name>]`` a model's tuned layout is stored under: the model's name, or
    ``custom:<absolute path>`` for ``model_path`` weights (the name rmcli gives them)."""
    if model_path:
        return f"custom:{Path(model_path).expanduser().resolve()}"
    return model


def apply_tuned_layout(values: dict[str, Value], layouts: Any, path: Path) -> None:
    """Layer the ``[layout.<model>]`` table of the resolved model over the config file's
    top-level values and the defaults (flags and environment still win); its source reads
    ``tuned [layout.<model>] <file>``."""
    if not isinstance(layouts, dict) or not all(isinstance(t, dict) for t in layouts.values()):
        raise ConfigError(f"{path}: layout must hold [layout.<model>] tables")
    name = layout_name(values["model"].value, values["model_path"].value)
    table = layouts.get(name, {})
    for key, raw in table.items():
        if key not in TUNED_KEYS:
            raise ConfigError(
                f"{path}: [layout.{name}] holds {key!r}; a layout holds {', '.join(TUNED_KEYS)}"
            )
        if RANK[values[key].layer] >= RANK[Layer.FILE]:
            origin = f"tuned [layout.{name}] {path}"
            converted = SETTINGS[key].convert(raw, origin, Layer.TUNED)
            values[key] = Value(converted, origin, Layer.TUNED)
