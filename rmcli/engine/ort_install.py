"""Which ONNX Runtime build is installed: exactly one variant, none, or a broken mix.

``onnxruntime``, ``onnxruntime-gpu`` and ``onnxruntime-openvino`` all install the same
``onnxruntime`` Python package: with two of them in one environment, whichever pip installed
last silently overwrote the other's files. rmcli depends on none of them directly; the extras
``rmcli[cpu]``, ``rmcli[gpu]`` and ``rmcli[openvino]`` each bring exactly one.
"""

from __future__ import annotations

from importlib import metadata

from rmcli.errors import BackendError
from rmcli.extras import pip_install

#: distribution -> the rmcli extra that installs it
VARIANTS = {
    "onnxruntime": "cpu",
    "onnxruntime-gpu": "gpu",
    "onnxruntime-openvino": "openvino",
}
#: other builds that also install the ``onnxruntime`` package (no rmcli extra)
OTHER_BUILDS = ("onnxruntime-directml", "onnxruntime-rocm", "onnxruntime-qnn")

INSTALL_HINT = f"{pip_install('cpu')} (or the gpu extra for CUDA, openvino for OpenVINO)"


def installed_builds() -> dict[str, str]:
    """Installed ONNX Runtime distributions and their versions, e.g. ``{"onnxruntime": "1.24"}``."""
    found = {}
    for name in (*VARIANTS, *OTHER_BUILDS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def mixed_install_problem(builds: dict[str, str] | None = None) -> str | None:
    """One line naming the clash and its fix when two builds share the module; else None."""
    builds = installed_builds() if builds is None else builds
    if len(builds) < 2:
        return None
    names = sorted(builds)
    listed = ", ".join(f"{name} {builds[name]}" for name in names)
    wanted = [VARIANTS[n] for n in names if n in VARIANTS and n != "onnxruntime"] or ["cpu"]
    reinstall = " or ".join(pip_install(extra) for extra in wanted)
    return (
        f"several ONNX Runtime builds are installed ({listed}); they share the onnxruntime "
        f"module and the last one installed overwrote the others. Keep one: "
        f"pip uninstall -y {' '.join(names)} && {reinstall}"
    )


def require_onnxruntime() -> None:
    """Raise a one-line :class:`BackendError` when no usable onnxruntime module is installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        builds = installed_builds()
        if builds:  # a distribution is listed but its module cannot be imported
            names = sorted(builds)
            raise BackendError(
                f"ONNX Runtime ({', '.join(names)}) is installed but cannot be imported: {exc}; "
                f"reinstall it: pip install --force-reinstall --no-deps {' '.join(names)}"
            ) from None
        raise BackendError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from None
