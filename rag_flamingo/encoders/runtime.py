"""How an encoder's network runs on a CPU: the runtime and the precision.

Taken by aisfx, the LAION-CLAP encoders, MS-CLAP 2022/2023 and clapcap (an encoder without these
options refuses ``runtime`` in one line, `encoders.base.check_options`).

- ``precision``: ``fp32``, or ``bf16`` (reduced precision, which only pays where the CPU computes
  bf16 natively: AVX512-BF16 or AMX on x86, BF16 on Arm; elsewhere it is emulated and many times
  slower). ``auto``: bf16 where the CPU has it natively (torch's CPU query, else /proc/cpuinfo; for
  openvino also the runtime's own device query) and the encoder's bf16 parity was measured (aisfx;
  ``resolve(auto_bf16=...)``), else fp32; on CUDA fp16 autocast, as before.
- ``runtime``: ``torch`` (eager PyTorch) or ``openvino`` (the network after the frontend converted
  once to an OpenVINO graph, cached, and compiled for this CPU; the optional ``fast`` extra installs
  it). The frontend stays in torch: aisfx's log-mel blocks, HTS-AT's log-mel + batch norm + patch
  embed (LAION-CLAP fusion's patch embed branches on the data, which a traced graph cannot follow),
  CNN14's log-mel + batch norm (`split_network`).
- ``auto`` is torch, for every encoder. The rule: OpenVINO becomes the default of an encoder when it
  is faster end to end in every measured run and safe in a process that forks afterwards. Measured
  (BENCHMARKS.md "Encoders against the hardware", loaded 2-core AVX2 CPU): aisfx 1.89x torch in one
  run and 0.89x in another (not reliably faster); the CLAP encoders 1.5-2.1x (HTS-AT: two runs,
  fusion one) and 1.28x (CNN14: one run), faster every time, but a test process that had run
  OpenVINO crashed later in a subprocess-spawning test (not root-caused) and ``build_index`` forks
  its decoding processes after the encoder is built: not shown safe, so OpenVINO is used only when
  asked for. bf16 with openvino needs a CPU
  whose OpenVINO reports bf16. A GPU device runs torch.

Both runtimes are held to the same contract by the tests: fp32 at cos >= 0.9999 and max abs <= 1e-4
against torch fp32 (every encoder above; ms_clap_2022's full-size CNN14 in BENCHMARKS.md only, its
conversion being too slow for the tests), aisfx's bf16 at cos >= 0.9999. fp32 embeddings of either
runtime are therefore interchangeable: a store records the runtime and precision it was built with
(fingerprint ``runtime`` and ``dtype`` or ``precision``), and a query with another runtime is accepted
(``store.comparable_fingerprint`` leaves them out; a bf16 store is queried in bf16).

The exported graph is cached beside the checkpoint (``<checkpoint>.graphs/``; under
``$RAG_FLAMINGO_CACHE_ROOT/graphs`` when that folder is read-only; read from either; not cached when
neither can be written), named by the checkpoint's sha256,
the runtime's version and the input layout, so a new checkpoint or runtime version makes a new graph.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from ..devices import cpu_native_bf16, resolve_precision
from ..errors import ConfigError, did_you_mean
from ..hashing import file_sha256

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _choice(option: str, value: str | None, choices: tuple[str, ...]) -> str:
    value = "auto" if value is None else str(value)
    if value not in choices:
        hint = did_you_mean(value, list(choices)) or f"; use one of {', '.join(choices)}"
        raise ConfigError(f"encoder option {option}={value!r} is not known{hint}")
    return value


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_bf16() -> bool:
    """OpenVINO's own query: does its CPU plugin compute bf16 on this CPU?"""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve(
    runtime: str | None, precision: str | None, device: torch.device, auto_bf16: bool = True
) -> tuple[str, torch.dtype]:
    """``(runtime, dtype)`` for the options as given (``auto`` resolved for this machine); a
    combination this machine cannot run is a ConfigError saying what to use instead. ``auto_bf16``:
    whether ``precision=auto`` may pick bf16 on a CPU that has it (False for an encoder whose bf16
    parity has not been measured: auto is then fp32 on the CPU)."""
    runtime = _choice("runtime", runtime, RUNTIMES)
    precision = _choice("precision", precision, PRECISIONS)
    if device.type != "cpu":
        if runtime == "openvino":
            raise ConfigError("encoder option runtime=openvino runs on the CPU; use device=cpu, or runtime=torch")
        return "torch", resolve_precision(precision, device)
    if runtime == "openvino" and not openvino_available():
        raise ConfigError(
            "encoder option runtime=openvino: OpenVINO is not installed "
            "(pip install 'rag-flamingo[fast]'), or use runtime=torch"
        )
    if precision == "auto":
        native = auto_bf16 and cpu_native_bf16() and (runtime != "openvino" or openvino_bf16())
        dtype = torch.bfloat16 if native else torch.float32
    else:
        dtype = resolve_precision(precision, device)
    if dtype == torch.float16:
        raise ConfigError("encoder option precision=fp16 is for CUDA; on the CPU use fp32 or bf16")
    if dtype == torch.bfloat16 and runtime == "torch" and not cpu_native_bf16():
        logger.warning(
            "encoder option precision=bf16: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), so torch "
            "emulates it, several times slower than fp32 (precision=auto picks fp32 here)"
        )
    if runtime == "auto":  # openvino is opt-in: its gain did not hold in every run (BENCHMARKS.md)
        runtime = "torch"
    if dtype == torch.bfloat16 and runtime == "openvino" and not (cpu_native_bf16() and openvino_bf16()):
        raise ConfigError(
            "encoder option precision=bf16 with runtime=openvino needs a CPU that computes bf16 "
            "(OpenVINO reports none here); use precision=fp32, or runtime=torch (bf16 emulated, slow)"
        )
    return runtime, dtype


def graph_dirs(checkpoint: Path) -> list[Path]:
    """Where exported graphs of ``checkpoint`` are looked for, in order: beside it, then the cache
    root's ``graphs/`` (a new graph is written to the first of them that can be written)."""
    from ..paths import cache_root

    return [checkpoint.parent / f"{checkpoint.name}.graphs", cache_root() / "graphs"]


def _writable(folder: Path) -> bool:
    """``folder`` can be written, or made: its nearest existing ancestor can be written."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def openvino_version() -> str:
    import openvino as ov

    return ov.get_version().split("-")[0]


class OpenVinoNet:
    """A torch module's forward as an OpenVINO compiled model: ``net(batch) -> torch.Tensor``.

    The graph is converted from the module once (``example`` gives the input layout; the first
    dimension is dynamic) and saved as ``<folder>/<key>-openvino<version>.xml`` with its weights in fp32,
    ``folder`` the first of ``caches`` that can be written; a later process reads a whole graph back
    from any of them instead of converting again.
    """

    def __init__(
        self, module: torch.nn.Module, example: torch.Tensor, caches: Sequence[Path], key: str, dtype: torch.dtype
    ):
        import openvino as ov

        name = f"{key}-openvino{openvino_version()}.xml"
        core = ov.Core()
        model = None
        for cache in caches:  # a whole graph already cached (even in a read-only folder) is read
            self.path = cache / name
            if self.path.is_file() and self.path.with_suffix(".bin").is_file():
                model = self._read(core)
                if model is not None:
                    break
        if model is None:
            model = ov.convert_model(module.float().eval(), example_input=example.float())
            model.reshape({model.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})
            writable = next((c for c in caches if _writable(c)), None)
            if writable is None:
                folders = ", ".join(map(str, caches))
                logger.warning("no writable folder for the converted graph (%s): not cached", folders)
            else:
                self._save(ov, model, writable / name)
        hint = "bf16" if dtype == torch.bfloat16 else "f32"
        threads = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, **threads})

    def _read(self, core):
        """The cached graph at ``self.path``, or None (warned) when its files do not match the digests
        written with them or cannot be read: it is converted again."""
        digests = self.path.with_suffix(".sha256.json")  # the graph files' sha256, written with them
        try:
            recorded = json.loads(digests.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != self._digests():
            logger.warning("%s does not match the digests written with it; converting the network again", self.path)
            return None
        try:
            return core.read_model(str(self.path))
        except RuntimeError as exc:  # a damaged cache file
            logger.warning("%s cannot be read (%s); converting the network again", self.path, str(exc).splitlines()[0])
            return None

    def _save(self, ov, model, path: Path) -> None:
        """Write the graph (fp32 weights: the parity contract) and its digests, each file renamed in
        place when whole, the digests last: a reader sees a whole graph with its digests, or none."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
        digests = path.with_suffix(".sha256.json")
        staged = digests.with_name(f"{digests.name}.tmp{os.getpid()}")
        staged.write_text(json.dumps(self._digests()))
        staged.replace(digests)
        logger.info("exported %s", path)

    def _digests(self) -> dict[str, str]:
        return {p.name: file_sha256(p) for p in (self.path, self.path.with_suffix(".bin"))}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.compiled(batch.float().contiguous().numpy())[0]
        return torch.from_numpy(out.copy())


class Forward(torch.nn.Module):
    """``owner.<method>`` as a module's forward: the part of a model that is converted (the owner is
    held as a submodule, so the conversion sees its weights)."""

    def __init__(self, owner: torch.nn.Module, method: str):
        super().__init__()
        self.owner, self.method = owner, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.method)(x)


def openvino_net(
    module: torch.nn.Module, example: torch.Tensor, checkpoint: Path, sha256: str, name: str, dtype: torch.dtype
) -> OpenVinoNet:
    """``module`` converted for OpenVINO and cached beside ``checkpoint`` as
    ``<name>-<sha256[:16]>-<input layout>``: ``name`` tells apart the networks of one checkpoint."""
    layout = "x".join(str(d) for d in example.shape[1:])
    return OpenVinoNet(module, example, graph_dirs(checkpoint), f"{name}-{sha256[:16]}-{layout}", dtype)


class Staged:
    """``net(frontend(x))``: a frontend run in torch, then a converted network."""

    def __init__(self, frontend: Callable[[torch.Tensor], torch.Tensor], net: OpenVinoNet):
        self.frontend, self.net = frontend, net

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.frontend(x))


class SplitModule(Protocol):
    """A module whose forward is ``network(frontend(x))``."""

    def frontend(self, x: torch.Tensor) -> torch.Tensor: ...

    def network(self, x: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def split_network(
    module: SplitModule,
    runtime: str,
    dtype: torch.dtype,
    example: torch.Tensor,
    checkpoint: Path,
    sha256: str,
    name: str,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` (whose ``forward(x)`` is ``network(frontend(x))``) as ``runtime`` runs it: the module
    itself for torch; for openvino its ``frontend`` in torch, then its ``network`` as the cached graph
    (``example``: an input of the frontend; the network's input layout is what the frontend makes of it)."""
    if runtime != "openvino":
        return module
    assert isinstance(module, torch.nn.Module), "the network is converted from a torch module"
    with torch.no_grad():  # not inference_mode: its tensors cannot be traced
        layout = module.frontend(example)
    net = openvino_net(Forward(module, "network"), layout, checkpoint, sha256, name, dtype)
    return Staged(module.frontend, net)


def autocast_dtype(runtime: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype torch autocasts to around a network call: ``dtype`` for torch; fp32 (no autocast)
    around a converted network, which runs in its own precision."""
    return dtype if runtime == "torch" else torch.float32
