"""openvino: Intel's OpenVINO runs the model inside ONNX Runtime (OpenVINOExecutionProvider).

Needs the ``onnxruntime-openvino`` build (``pip install 'rmcli[openvino]'``), which installs
the same ``onnxruntime`` module as the CPU build and bundles the OpenVINO libraries. fp32 gives
the CPU provider's masks, faster; ``precision = "bf16"`` runs in bfloat16 on CPUs that have it
natively (OpenVINO lists ``BF16`` among the CPU's optimisation capabilities) and refuses to
emulate it elsewhere, where it would be slower than fp32.

Like cuda-hybrid, the backend checks ``session.get_providers()`` after building: when
OpenVINO is not active it warns and runs on the CPU provider, or fails with ``strict_device``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import logging
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from rmcli.config.settings import Settings
from rmcli.contracts.backend import Backend, base_options, provider_name
from rmcli.contracts.threads import ThreadLayout
from rmcli.engine.ort_install import mixed_install_problem
from rmcli.errors import BackendError
from rmcli.extras import pip_install
from rmcli.hookspecs import hookimpl

log = logging.getLogger(__name__)

OPENVINO = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"
DISTRIBUTION = "onnxruntime-openvino"
INSTALL_HINT = pip_install("openvino")
PROVIDER_LIBRARY = "libonnxruntime_providers_openvino.so"
#: OpenVINO's names for the precisions rmcli offers (INFERENCE_PRECISION_HINT values)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
NOT_HONOURED = "OpenVINO runs the model on its own threads (intra_threads of them) and places them"


class OpenVino(Backend):
    name = "openvino"
    summary = "OpenVINO inside ONNX Runtime: fp32 (exact) or bf16 on CPUs with native bf16"
    cpu_fallback = True
    precisions = ("fp32", "bf16")

    def availability(self) -> tuple[bool, str]:
        """Whether the OpenVINO build of ONNX Runtime is the one installed (no import needed)."""
        version = _version(DISTRIBUTION)
        if version is None:
            return False, f"{DISTRIBUTION} is not installed ({INSTALL_HINT}); runs on the CPU"
        problem = mixed_install_problem()
        if problem:
            return False, problem
        if capi_folder() is None or not (capi_folder() / PROVIDER_LIBRARY).exists():
            return False, f"the onnxruntime module has no OpenVINO provider; {_reinstall()}"
        caps = cpu_capabilities()
        bf16 = "bf16 native" if caps and "BF16" in caps else "no native bf16"
        return True, f"{DISTRIBUTION} {version} (OpenVINO {openvino_version()}), CPU {bf16}"

    def adjust_layout(self, layout: ThreadLayout, settings: Settings) -> ThreadLayout:
        """``intra_threads`` becomes OpenVINO's ``num_of_threads``; ORT's own pool (same size,
        for nodes OpenVINO would reject, and the whole model when OpenVINO is missing) runs
        sequentially, unpinned and without spinning, so it never competes with OpenVINO's."""
        layout = replace(
            layout,
            inter_threads=1,
            execution_mode="sequential",
            spinning=False,
            worker_cpus=(),
            caller_cpus=(),
        )
        for key in ("cpu_binding", "execution_mode", "allow_spinning"):
            layout = layout.ignore(key, NOT_HONOURED)
        return layout

    def session_options(self, settings: Settings):
        cache = cache_dir(settings)
        if cache is not None:
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning(f"openvino: compiled models are not cached: {cache}: {exc}")
        return base_options(settings)

    def provider_options(
        self, settings: Settings, layout: ThreadLayout, precision: str | None = None
    ) -> dict[str, str]:
        """The OpenVINOExecutionProvider options (all strings, as ONNX Runtime wants them)."""
        hint = PRECISION_HINTS[precision or settings["precision"]]
        streams = settings["openvino_streams"]
        threads = layout.intra_threads or layout.usable_cpus  # per inference, so per stream
        if streams > 1:  # num_of_threads is the compiled model's total, shared by its streams
            threads = max(threads, min(threads * streams, layout.usable_cpus))
        options = {
            "device_type": "CPU",
            "num_of_threads": str(threads),
            "num_streams": str(streams),
            "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}}),
        }
        cache = cache_dir(settings)
        if cache is not None and cache.is_dir():
            options["cache_dir"] = str(cache)
        return options

    def providers(self, settings: Settings, layout: ThreadLayout) -> list:
        return [(OPENVINO, self.provider_options(settings, layout)), CPU]

    def check_session(self, session: Any, plan: Any) -> None:
        """The truth: if OpenVINO is not among the session's providers, say why."""
        if OPENVINO not in session.get_providers():
            _refuse_or_warn(why_openvino_is_off(), plan.settings)

    def describe(self, settings: Settings) -> dict[str, Any]:
        caps = cpu_capabilities()
        precision = settings["precision"]
        if precision == "bf16" and native_bf16_problem():
            precision = "fp32"  # what adjust_session falls back to, with its warning
        return {
            "inference_precision_hint": PRECISION_HINTS[precision],  # what OpenVINO is told
            "openvino_streams": settings["openvino_streams"],
            "openvino_cache_dir": str(cache_dir(settings) or "off"),
            "cpu_capabilities": " ".join(caps) if caps else "unknown (OpenVINO not installed)",
            "strict_device": settings["strict_device"],
        }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _reinstall() -> str:
    return f"pip uninstall -y onnxruntime {DISTRIBUTION} && {INSTALL_HINT}"


def capi_folder() -> Path | None:
    """``onnxruntime/capi`` of the installed module, found without importing it."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "capi"


@functools.cache
def _openvino_c() -> ctypes.CDLL | None:
    """OpenVINO's C library as bundled by onnxruntime-openvino (None when absent)."""
    folder = capi_folder()
    if folder is None or not (folder / "libopenvino_c.so").exists():
        return None
    try:
        lib = ctypes.CDLL(str(folder / "libopenvino_c.so"))
    except OSError:
        return None
    lib.ov_core_get_property.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_char_p),
    ]
    return lib


class _Version(ctypes.Structure):
    _fields_ = [("build_number", ctypes.c_char_p), ("description", ctypes.c_char_p)]


@functools.cache
def openvino_version() -> str:
    """OpenVINO's build number, e.g. ``2025.4.1-...`` ('unknown' without the library)."""
    lib = _openvino_c()
    version = _Version()
    if lib is None or lib.ov_get_openvino_version(ctypes.byref(version)) != 0:
        return "unknown"
    text = (version.build_number or b"unknown").decode()
    lib.ov_version_free(ctypes.byref(version))
    return text


@functools.cache
def cpu_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. BF16, FP32, INT8); None when
    OpenVINO is not installed. ``BF16`` means native bfloat16 (AVX512_BF16 or AMX)."""
    lib = _openvino_c()
    if lib is None:
        return None
    core = ctypes.c_void_p()
    if lib.ov_core_create(ctypes.byref(core)) != 0:
        return None
    try:
        value = ctypes.c_char_p()
        status = lib.ov_core_get_property(
            core, b"CPU", b"OPTIMIZATION_CAPABILITIES", ctypes.byref(value)
        )
        if status != 0 or value.value is None:
            return None
        capabilities = tuple(value.value.decode().split())
        lib.ov_free(value)
        return capabilities
    finally:
        lib.ov_core_free(core)


def cache_dir(settings: Settings) -> Path | None:
    """Where OpenVINO keeps compiled models (None: ``openvino_cache_dir = "off"``)."""
    text = settings["openvino_cache_dir"]
    if text == "off":
        return None
    if text:
        return Path(text).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rmcli")) / "openvino"


def native_bf16_problem() -> str | None:
    """Why bf16 cannot run natively here, or None when it can."""
    caps = cpu_capabilities()
    if caps is None:
        return "OpenVINO's CPU capabilities could not be read"
    if "BF16" not in caps:
        return (
            f"this CPU has no native bf16 (OpenVINO's CPU capabilities: {' '.join(caps)}); "
            "emulated bf16 would be slower than fp32"
        )
    return None


def why_openvino_is_off() -> str:
    """The most likely reason OpenVINO is not active, for the warning or the strict error."""
    import onnxruntime as ort

    if _version(DISTRIBUTION) is None:
        return f"{DISTRIBUTION} is not installed ({INSTALL_HINT})"
    problem = mixed_install_problem()
    if problem:
        return problem
    if OPENVINO not in ort.get_available_providers():
        return f"the onnxruntime module in use has no OpenVINO provider; {_reinstall()}"
    return "ONNX Runtime did not activate OpenVINO"


def _refuse_or_warn(reason: str, settings: Settings) -> None:
    if settings["strict_device"]:
        raise BackendError(f"openvino: OpenVINO is not used: {reason} (strict_device is set)")
    log.warning(f"openvino: OpenVINO is not used, running on the CPU provider at fp32: {reason}")


@hookimpl
def register_backends(register):
    register(OpenVino())


@hookimpl(trylast=True)
def adjust_session(plan) -> None:
    """Before building: without native bf16, run at fp32 and say why (refuse with
    strict_device). Emulated bf16 would only be slower than fp32."""
    if plan.backend.name != OpenVino.name or plan.settings["precision"] != "bf16":
        return
    if not any(provider_name(p) == OPENVINO for p in plan.providers):
        return  # OpenVINO is missing: check_session says so
    problem = native_bf16_problem()
    if problem is None:
        return
    if plan.settings["strict_device"]:
        raise BackendError(f"openvino: precision bf16 is not used: {problem}")
    log.warning(f"openvino: precision bf16 is not used, running at fp32: {problem}")
    backend: OpenVino = plan.backend
    plan.providers = [
        (OPENVINO, backend.provider_options(plan.settings, plan.layout, "fp32"))
        if provider_name(p) == OPENVINO
        else p
        for p in plan.providers
    ]
