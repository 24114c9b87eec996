"""Benchmark Visio against the naive dlib pipeline, in-process, over native gRPC and over REST.

Every figure comes from the same run on the same machine and the report is made of ratios, so a
busy or slower machine moves all rows together. Rows, for "all" (every JPEG of the corpus) and
"large" (photos of 10 MP and more, plus ../shared/edge-inputs/large_6000.jpg when present):

  1. naive dlib in a child process: Pillow decode, HOG upsample 1, 68-point landmarks, ResNet
  2. FacePipeline.analyze in a child process, one image at a time
  3. `visio serve` over native gRPC, one client
  4. the same with N clients (threads, each with its own channel)
  5. REST through Envoy, one client

then a memory soak over gRPC and an agreement check of Visio's faces and same-person decisions
against the naive pipeline of the same run. The Markdown report goes to stdout, progress to
stderr, and everything measured to .bench/results.json.

    python scripts/bench.py            # full run with a 2000-request soak, about 8 minutes on 2 cores
    python scripts/bench.py --quick    # every third photo, no 29 MP photo, 300-request soak: about 2 minutes
    python scripts/bench.py --levers   # engine settings sweep (detect_max_side, landmarks, ...)

Exit status is 0 for a completed run whatever the numbers say; it is a report, not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import queue
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CORPUS = REPO.parent / "shared" / "faces"
DEFAULT_LARGE_EXTRA = REPO.parent / "shared" / "edge-inputs" / "large_6000.jpg"
DEFAULT_JSON = REPO / ".bench" / "results.json"
LARGE_PIXELS = 10_000_000
SMALL_FILE_BYTES = 1_000_000
THRESHOLD = 0.6
MIB = 1024 * 1024
CHECKPOINT_EVERY = 200
SAMPLE_INTERVAL_S = 0.05

# Targets (ratios measured in the same run).
TARGET_ENGINE_VS_NAIVE_ALL = 3.0
TARGET_ENGINE_VS_NAIVE_LARGE = 10.0
TARGET_GRPC_SCALING = 1.8
TARGET_GRPC_VS_ENGINE = 0.9
TARGET_REST_VS_GRPC = 0.9
TARGET_RSS_MB = 1024.0
TARGET_GROWTH = 0.05


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- in-process rows: run in spawned children so peak RSS is their own ----------------------------


class _Stages:
    """Accumulates seconds per pipeline stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)

        return wrapper


class _TimedDetector:
    def __init__(self, detector: Any, stages: _Stages) -> None:
        self.run = stages.timed("hog", detector.run)


class _TimedResnet:
    def __init__(self, resnet: Any, stages: _Stages) -> None:
        self.compute_face_descriptor = stages.timed("descriptor", resnet.compute_face_descriptor)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / MIB


def _naive_runner() -> tuple[Callable[[bytes], list[dict[str, Any]]], _Stages]:
    """What everybody writes first: full-size decode, upsample 1, 68 points, ResNet."""
    import dlib
    from PIL import Image

    from visio_grpc.engine.models import RESNET, SHAPE_PREDICTORS, models_dir

    folder = models_dir()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(folder / SHAPE_PREDICTORS[68]))
    resnet = dlib.face_recognition_model_v1(str(folder / RESNET))
    stages = _Stages()

    def run(data: bytes) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        img = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
        t1 = time.perf_counter()
        rects = detector(img, 1)
        t2 = time.perf_counter()
        faces = []
        landmarks_s = descriptor_s = 0.0
        for rect in rects:
            a = time.perf_counter()
            shape = predictor(img, rect)
            b = time.perf_counter()
            descriptor = np.asarray(resnet.compute_face_descriptor(img, shape), dtype=np.float32)
            c = time.perf_counter()
            landmarks_s += b - a
            descriptor_s += c - b
            width = rect.right() - rect.left() + 1
            faces.append({"width": width, "descriptor": descriptor.tolist()})
        stages.add("decode", t1 - t0)
        stages.add("detect", t2 - t1)
        stages.add("landmarks", landmarks_s)
        stages.add("descriptor", descriptor_s)
        return faces

    return run, stages


def _engine_runner(config_overrides: dict[str, Any]) -> tuple[Callable[[bytes], dict[str, Any]], _Stages]:
    """FacePipeline exactly as the service builds it, with timing wrappers around each stage."""
    import visio_grpc.engine.pipeline as pipeline_module
    from visio_grpc.config import Settings
    from visio_grpc.server import engine_config

    config = replace(engine_config(Settings()), **config_overrides)
    pipeline = pipeline_module.FacePipeline(config)
    stages = _Stages()
    # Instance attributes shadow the methods and models; analyze() itself is untouched.
    pipeline_module.decode_image = stages.timed("decode", pipeline_module.decode_image)  # type: ignore[assignment]
    pipeline._detect = stages.timed("detect", pipeline._detect)  # type: ignore[method-assign]
    pipeline._detector = _TimedDetector(pipeline._detector, stages)
    pipeline._predictor = stages.timed("landmarks", pipeline._predictor)
    pipeline._resnet = _TimedResnet(pipeline._resnet, stages)

    def run(data: bytes) -> dict[str, Any]:
        analysis = pipeline.analyze(data, field="face", single=False)
        return {
            "total_found": analysis.total_found,
            "faces": [
                {
                    "width": face.box.width,
                    "descriptor": None if face.descriptor is None else face.descriptor.tolist(),
                }
                for face in analysis.faces
            ],
        }

    return run, stages


def _busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (every state but idle and iowait)."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _child_main(kind: str, overrides: dict[str, Any], paths: list[str], extra: list[str], warm: str,
                conn: Any) -> None:
    try:
        runner, stages = _naive_runner() if kind == "naive" else _engine_runner(overrides)
        runner(Path(warm).read_bytes())  # first-call costs out of the timings
        rss_loaded = _rss_mb()
        report: dict[str, Any] = {"rss_after_load_mb": rss_loaded, "per_image": [], "extra_count": len(extra)}
        for part, files in (("main", paths), ("extra", extra)):
            busy0, cpu0, start = _busy_seconds(), time.process_time(), time.perf_counter()
            for path in files:
                data = Path(path).read_bytes()
                stages.seconds.clear()
                c0, t0 = time.process_time(), time.perf_counter()
                error = None
                try:
                    result: Any = runner(data)
                except Exception as exc:  # recorded as a row error, not a crash of the benchmark
                    result, error = None, f"{type(exc).__name__}: {exc}"
                report["per_image"].append({
                    "file": Path(path).name, "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                    "stages_s": dict(stages.seconds), "result": result, "error": error})
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            report[part] = {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": max(0.0, _busy_seconds() - busy0 - cpu),
                            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        conn.send(report)
    except BaseException as exc:
        conn.send({"crash": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        conn.close()


def run_child(kind: str, paths: Sequence[Path], warm: Path, overrides: dict[str, Any] | None = None,
              extra: Sequence[Path] = ()) -> dict[str, Any]:
    """Runs `paths` then `extra` in a fresh spawned process; ru_maxrss is read after each part."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(kind, overrides or {}, [str(p) for p in paths],
                                                        [str(p) for p in extra], str(warm), sender))
    process.start()
    sender.close()
    try:
        report: dict[str, Any] = receiver.recv()
    except EOFError:
        report = {"crash": "child exited without a report"}
    process.join()
    if "crash" in report:
        raise RuntimeError(f"{kind} child failed: {report['crash']} (exit code {process.exitcode})")
    return report


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


@dataclass
class Row:
    path: str
    subset: str
    images: int
    wall_s: float
    latencies_s: list[float]
    peak_rss_mb: float
    errors: int = 0
    cores_used: float | None = None  # CPU seconds of the working processes / wall time
    others_cores: float | None = None  # CPU seconds of everything else on the machine / wall time
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "subset": self.subset, "images": self.images, "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 3),
            "p50_ms": round(percentile(self.latencies_s, 50) * 1000, 1),
            "p95_ms": round(percentile(self.latencies_s, 95) * 1000, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1), "errors": self.errors,
            "cores_used": None if self.cores_used is None else round(self.cores_used, 2),
            "others_cores": None if self.others_cores is None else round(self.others_cores, 2), **self.extra,
        }


def child_row(path: str, subset: str, report: dict[str, Any], files: Sequence[Path] | None = None) -> Row:
    """`files` None: the main part (wall clock of the loop); else those files' own latencies, summed."""
    if files is None:
        per_image = report["per_image"][: len(report["per_image"]) - _extra_count(report)]
        part = report["main"]
        wall, cpu, others, peak = part["wall_s"], part["cpu_s"], part["others_cpu_s"], part["peak_rss_mb"]
    else:
        names = {p.name for p in files}
        per_image = [item for item in report["per_image"] if item["file"] in names]
        wall = sum(item["seconds"] for item in per_image)
        cpu = sum(item["cpu_s"] for item in per_image)
        others = None
        peak = report["extra"]["peak_rss_mb"]  # the process' peak over everything, reached on the large photos
    stages: dict[str, float] = {}
    for item in per_image:
        for name, seconds in item["stages_s"].items():
            stages[name] = stages.get(name, 0.0) + seconds
    n = max(1, len(per_image))
    return Row(
        path=path, subset=subset, images=len(per_image), wall_s=wall,
        latencies_s=[item["seconds"] for item in per_image], peak_rss_mb=peak,
        errors=sum(1 for item in per_image if item["error"]),
        cores_used=cpu / wall if wall else None, others_cores=None if others is None else others / wall,
        extra={"rss_after_load_mb": round(report["rss_after_load_mb"], 1),
               "stages_ms_per_image": {k: round(v * 1000 / n, 1) for k, v in stages.items()},
               "total_ms_per_image": round(wall * 1000 / n, 1)},
    )


def _extra_count(report: dict[str, Any]) -> int:
    return int(report.get("extra_count", 0))


# --- the service: process-tree RSS sampling and clients -------------------------------------------


class TreeSampler(threading.Thread):
    """Sum of RSS over a process and all its descendants, every SAMPLE_INTERVAL_S."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self._root = psutil.Process(pid)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.peak_mb = 0.0
        self.processes: set[str] = set()

    def current_mb(self) -> float:
        import psutil

        total = 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for proc in procs:
            try:
                total += proc.memory_info().rss
                self.processes.add(proc.name())
            except psutil.Error:
                pass
        return total / MIB

    def cpu_snapshot(self) -> dict[int, tuple[str, float]]:
        """pid -> (group, CPU seconds) for the server tree ('server', 'envoy', 'workers') and this process."""
        import psutil

        snapshot: dict[int, tuple[str, float]] = {}
        me = psutil.Process()
        try:
            procs = [self._root, *self._root.children(recursive=True), me]
        except psutil.Error:
            procs = [me]
        for proc in procs:
            try:
                times = proc.cpu_times()
                name = proc.name()
            except psutil.Error:
                continue
            if proc.pid == self._root.pid:
                group = "server"
            elif proc.pid == me.pid:
                group = "client"
            elif "envoy" in name:
                group = "envoy"
            else:
                group = "workers"
            snapshot[proc.pid] = (group, times.user + times.system)
        return snapshot

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_INTERVAL_S):
            value = self.current_mb()
            with self._lock:
                self.peak_mb = max(self.peak_mb, value)

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_mb = self.current_mb()

    def read_peak(self) -> float:
        value = self.current_mb()
        with self._lock:
            self.peak_mb = max(self.peak_mb, value)
            return self.peak_mb

    def stop(self) -> None:
        self._stop_event.set()


def _channel(target: str) -> Any:
    import grpc

    options = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
    channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


def grpc_caller(target: str, key: str) -> Callable[[bytes], int]:
    from visio_grpc._proto.visio.v1 import face_service_pb2, face_service_pb2_grpc

    stub = face_service_pb2_grpc.FaceServiceStub(_channel(target))
    metadata = (("authorization", key),)

    def call(data: bytes) -> int:
        reply = stub.DetectFaces(face_service_pb2.DetectFacesRequest(image=data), metadata=metadata, timeout=300)
        return sum(1 for face in reply.faces if len(face.descriptor))

    return call


def rest_caller(base: str, key: str) -> Callable[[bytes], int]:
    from tests.helpers import Rest

    rest = Rest(base, key)

    def call(data: bytes) -> int:
        response = rest.upload("/v1/faces/detect-all", {"face": data})
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {response.body[:200]!r}")
        return sum(1 for face in response.json.get("faces", []) if face.get("descriptor"))

    return call


@dataclass
class LoadResult:
    wall_s: float
    latencies_s: list[float]
    errors: list[str]
    described: dict[str, int]


def run_load(make_caller: Callable[[], Callable[[bytes], int]], items: Sequence[tuple[str, bytes]], clients: int,
             on_done: Callable[[], None] | None = None) -> LoadResult:
    """`clients` threads, each with its own connection, working through a shared queue of images."""
    work: queue.Queue[tuple[str, bytes]] = queue.Queue()
    for item in items:
        work.put(item)
    callers = [make_caller() for _ in range(clients)]  # connections ready before the clock starts
    latencies: list[float] = []
    errors: list[str] = []
    described: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(call: Callable[[bytes], int]) -> None:
        barrier.wait()
        while True:
            try:
                name, data = work.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            try:
                count = call(data)
                error = None
            except Exception as exc:
                count, error = -1, f"{name}: {type(exc).__name__}: {str(exc)[:200]}"
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                described.setdefault(name, count)
                if error:
                    errors.append(error)
            if on_done is not None:
                on_done()

    threads = [threading.Thread(target=client, args=(call,), daemon=True) for call in callers]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return LoadResult(time.perf_counter() - start, latencies, errors, described)


# --- agreement ----------------------------------------------------------------------------------


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def agreement(naive: dict[str, list[dict[str, Any]]], engine: dict[str, dict[str, Any]],
              manifest: dict[str, Any]) -> dict[str, Any]:
    """Face counts on naive single-face photos, and pair decisions, naive vs Visio vs manifest."""
    singles = sorted(name for name, faces in naive.items() if len(faces) == 1 and name in engine)
    count_rows = []
    for name in singles:
        result = engine[name]
        described = sum(1 for face in result["faces"] if face["descriptor"] is not None)
        count_rows.append({"file": name, "naive": 1, "visio_described": described,
                           "visio_total_found": result["total_found"]})
    described_ok = sum(1 for r in count_rows if r["visio_described"] == 1)
    total_ok = sum(1 for r in count_rows if r["visio_total_found"] == 1)

    def naive_descriptor(name: str) -> list[float] | None:
        faces = naive.get(name)
        return faces[0]["descriptor"] if faces is not None and len(faces) == 1 else None

    def engine_descriptor(name: str) -> list[float] | None:
        result = engine.get(name)
        if result is None:
            return None
        described = [face["descriptor"] for face in result["faces"] if face["descriptor"] is not None]
        return described[0] if described else None  # faces come largest first

    pairs = []
    skipped = 0
    for pair in manifest["pairs"]:
        a, b = pair["a"], pair["b"]
        if a not in naive or b not in naive:
            continue
        na, nb, ea, eb = naive_descriptor(a), naive_descriptor(b), engine_descriptor(a), engine_descriptor(b)
        if na is None or nb is None or ea is None or eb is None:
            skipped += 1
            continue
        pairs.append({"a": a, "b": b, "same_person": pair["same_person"], "manifest_distance": pair["distance"],
                      "manifest_match": pair["match_at_0_6"], "borderline": pair.get("borderline", False),
                      "naive_distance": round(_distance(na, nb), 4), "visio_distance": round(_distance(ea, eb), 4)})
    for p in pairs:
        p["naive_match"] = p["naive_distance"] <= THRESHOLD
        p["visio_match"] = p["visio_distance"] <= THRESHOLD
    disagreements = [p for p in pairs if p["naive_match"] != p["visio_match"]]
    delta = [abs(p["naive_distance"] - p["visio_distance"]) for p in pairs]
    return {
        "single_face_photos": len(count_rows),
        "described_equals_1": described_ok,
        "total_found_equals_1": total_ok,
        "count_mismatches": [r for r in count_rows if r["visio_described"] != 1 or r["visio_total_found"] != 1],
        "pairs": len(pairs),
        "pairs_skipped": skipped,
        "visio_agrees_naive": len(pairs) - len(disagreements),
        "disagreements": disagreements,
        "naive_agrees_manifest": sum(1 for p in pairs if p["naive_match"] == p["manifest_match"]),
        "visio_agrees_manifest": sum(1 for p in pairs if p["visio_match"] == p["manifest_match"]),
        "naive_correct": sum(1 for p in pairs if p["naive_match"] == p["same_person"]),
        "visio_correct": sum(1 for p in pairs if p["visio_match"] == p["same_person"]),
        "distance_delta_mean": round(statistics.fmean(delta), 4) if delta else None,
        "distance_delta_max": round(max(delta), 4) if delta else None,
    }


def agreement_passes(agree: dict[str, Any]) -> bool:
    return (agree["described_equals_1"] == agree["single_face_photos"]
            and agree["visio_agrees_naive"] == agree["pairs"] and agree["pairs"] > 0)


# --- corpus -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    all: list[Path]
    large: list[Path]
    small: list[Path]
    warm: Path
    manifest: dict[str, Any]
    megapixels: dict[str, float]


def load_corpus(folder: Path, large_extra: Path | None, quick: bool) -> Corpus:
    from PIL import Image

    files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.jpeg")) + sorted(folder.glob("*.JPG"))
    if not files:
        raise SystemExit(f"no JPEG files in {folder}")
    megapixels = {}
    for path in [*files, *([large_extra] if large_extra and large_extra.is_file() else [])]:
        with Image.open(path) as img:
            megapixels[path.name] = img.size[0] * img.size[1] / 1e6
    large = [p for p in files if megapixels[p.name] * 1e6 >= LARGE_PIXELS]
    if quick:
        files = files[::3]
    elif large_extra is not None and large_extra.is_file():
        large.append(large_extra)
    small = [p for p in files if p.stat().st_size < SMALL_FILE_BYTES]
    warm = min(files, key=lambda p: megapixels[p.name])
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"pairs": []}
    return Corpus(files, large, small, warm, manifest, megapixels)


# --- the run ------------------------------------------------------------------------------------


def in_process_rows(corpus: Corpus) -> tuple[list[Row], dict[str, Any]]:
    """One child per pipeline: the corpus ("all"), then the large photos not in it (the 29 MP one)."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    names = {p.name for p in corpus.all}
    extra = [p for p in corpus.large if p.name not in names]
    for kind, label in (("naive", "naive dlib, in-process"), ("engine", "Visio engine, in-process")):
        log(f"{label}: {len(corpus.all)} photos + {len(extra)} extra large")
        report = run_child(kind, corpus.all, corpus.warm, extra=extra)
        raw[kind] = report
        for subset, files in (("all", None), ("large", corpus.large)):
            row = child_row(label, subset, report, files)
            rows.append(row)
            log(f"  {subset}: {row.images_per_s:.2f} images/s, peak RSS {row.peak_rss_mb:.0f} MB, "
                f"{_fmt(row.cores_used)} cores used, others {_fmt(row.others_cores)}")
    rows.sort(key=lambda r: r.subset)  # all, then large; naive before engine within each
    return rows, raw


def service_rows(corpus: Corpus, args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    from tests.helpers import ServiceProcess, create_key

    rows: list[Row] = []
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="visio-bench-") as tmp:
        database_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        log(f"starting visio serve --workers {args.workers}")
        service = ServiceProcess(database_url, extra_args=("--workers", str(args.workers), "--no-first-key")).start()
        try:
            assert service.process is not None
            key = create_key(database_url, "bench")
            sampler = TreeSampler(service.process.pid)
            sampler.start()
            grpc_make = lambda: grpc_caller(service.grpc_target, key)  # noqa: E731
            rest_make = lambda: rest_caller(service.http_base, key)  # noqa: E731
            warm = [(corpus.warm.name, corpus.warm.read_bytes())] * (2 * args.workers)
            run_load(grpc_make, warm, args.workers)  # workers' first calls out of the timings
            run_load(rest_make, warm[:1], 1)
            info["idle_rss_mb"] = round(sampler.current_mb(), 1)

            def measure(label: str, subset: str, make: Callable[[], Callable[[bytes], int]],
                        items: list[tuple[str, bytes]], clients: int) -> Row:
                log(f"{label}: {subset} ({len(items)} requests, {clients} client(s))")
                sampler.reset_peak()
                cpu0, busy0 = sampler.cpu_snapshot(), _busy_seconds()
                result = run_load(make, items, clients)
                cpu1, busy1 = sampler.cpu_snapshot(), _busy_seconds()
                groups: dict[str, float] = {}
                for pid, (group, seconds) in cpu1.items():
                    groups[group] = groups.get(group, 0.0) + seconds - cpu0.get(pid, (group, 0.0))[1]
                wall = result.wall_s
                cores = {g: round(v / wall, 2) for g, v in sorted(groups.items())}
                others = max(0.0, busy1 - busy0 - sum(groups.values())) / wall
                row = Row(label, subset, len(items), wall, result.latencies_s, sampler.read_peak(),
                          errors=len(result.errors),
                          cores_used=sum(v for g, v in groups.items() if g != "client") / wall, others_cores=others,
                          extra={"cores_by_process": cores, "described": result.described,
                                 "error_samples": result.errors[:5]})
                log(f"  {row.images_per_s:.2f} images/s, peak tree RSS {row.peak_rss_mb:.0f} MB, cores {cores}, "
                    f"others {others:.2f}"
                    + (f", {row.errors} errors: {result.errors[:2]}" if result.errors else ""))
                return row

            for subset, paths, repeats in (("all", corpus.all, args.repeat), ("large", corpus.large, 4)):
                if not paths:
                    continue
                items = [(p.name, p.read_bytes()) for p in paths]
                rows.append(measure("gRPC, 1 client", subset, grpc_make, items, 1))
                rows.append(measure(f"gRPC, {args.clients} clients", subset, grpc_make, items * repeats,
                                    args.clients))
                rows.append(measure("REST via Envoy, 1 client", subset, rest_make, items, 1))
            info["soak"] = soak(corpus, args, grpc_make, sampler)
            info["processes"] = sorted(sampler.processes)
            sampler.stop()
        finally:
            code = service.stop()
            info["serve_exit_code"] = code
            if code not in (0, None):
                log(f"visio serve exited with {code}; last output:\n" + "".join(service.output[-20:]))
    return rows, info


def soak(corpus: Corpus, args: argparse.Namespace, make: Callable[[], Callable[[bytes], int]],
         sampler: TreeSampler) -> dict[str, Any]:
    """args.soak requests over small photos, in blocks of args.checkpoint; idle tree RSS after each."""
    small = [(p.name, p.read_bytes()) for p in corpus.small]
    total = args.soak
    log(f"memory soak: {total} requests over {len(small)} small photos, {args.clients} clients")
    sampler.reset_peak()
    checkpoints = []
    errors: list[str] = []
    done = 0
    start = time.perf_counter()
    index = 0
    while done < total:
        block = min(args.checkpoint, total - done)
        items = [small[(index + i) % len(small)] for i in range(block)]
        index += block
        result = run_load(make, items, args.clients)
        errors += result.errors
        done += block
        time.sleep(0.2)  # let the workers go idle: measure retained memory, not images in flight
        checkpoints.append({"requests": done, "rss_mb": round(sampler.current_mb(), 1)})
        log(f"  {done}/{total}: tree RSS {checkpoints[-1]['rss_mb']:.0f} MB")
    wall = time.perf_counter() - start
    first, last = checkpoints[0]["rss_mb"], checkpoints[-1]["rss_mb"]
    xs = np.array([c["requests"] for c in checkpoints], dtype=np.float64)
    ys = np.array([c["rss_mb"] for c in checkpoints], dtype=np.float64)
    slope = float(np.polyfit(xs, ys, 1)[0]) * 1000 if len(checkpoints) >= 3 else None
    return {
        "requests": total, "clients": args.clients, "photos": len(small), "wall_s": round(wall, 2),
        "images_per_s": round(total / wall, 2), "checkpoints": checkpoints,
        "rss_after_first_mb": first, "rss_end_mb": last, "peak_rss_mb": round(sampler.read_peak(), 1),
        "growth": round((last - first) / first, 4) if first else None,
        "slope_mb_per_1000": None if slope is None else round(slope, 2),
        "errors": len(errors), "error_samples": errors[:5],
    }


def stage_table(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"run": f"{r.path.split(',')[0]} / {r.subset}", "total_ms": r.extra["total_ms_per_image"],
             **r.extra["stages_ms_per_image"]} for r in rows if "stages_ms_per_image" in r.extra]


# --- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _find(rows: list[Row], prefix: str, subset: str) -> Row | None:
    return next((r for r in rows if r.path.startswith(prefix) and r.subset == subset), None)


def _ratio(a: Row | None, b: Row | None) -> float | None:
    return a.images_per_s / b.images_per_s if a and b and b.images_per_s > 0 else None


def build_checks(rows: list[Row], info: dict[str, Any], agree: dict[str, Any] | None,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, target: str, ok: bool | None, shown: str | None = None) -> None:
        shown = shown or (_fmt(value) + ("×" if value is not None else ""))
        checks.append({"check": name, "value": value, "shown": shown, "target": target,
                       "result": ("info" if target == "info" else "n/a") if ok is None else ("PASS" if ok else "FAIL")})

    for subset, target in (("all", TARGET_ENGINE_VS_NAIVE_ALL), ("large", TARGET_ENGINE_VS_NAIVE_LARGE)):
        r = _ratio(_find(rows, "Visio engine", subset), _find(rows, "naive", subset))
        check(f"engine vs naive throughput ({subset})", r, f"≥ {target:g}×", None if r is None else r >= target)
    for subset in ("all", "large"):
        r = _ratio(_find(rows, f"gRPC, {args.clients} clients", subset), _find(rows, "gRPC, 1 client", subset))
        check(f"gRPC {args.clients} clients vs 1 client ({subset})", r, f"≥ {TARGET_GRPC_SCALING:g}×",
              None if r is None else r >= TARGET_GRPC_SCALING)
        many, one = _find(rows, f"gRPC, {args.clients} clients", subset), _find(rows, "gRPC, 1 client", subset)
        if many and one and many.cores_used and one.cores_used and many.others_cores is not None:
            # On a shared machine the workers only get the cores others leave: images per server CPU-second
            # tells whether the service itself scales, and the projection is what an idle machine would give.
            efficiency = (many.images_per_s / many.cores_used) / (one.images_per_s / one.cores_used)
            idle_cores = min(args.workers, os.cpu_count() or 1)
            projected = efficiency * idle_cores / one.cores_used
            check(f"  ↳ same, per server CPU-second ({subset}); server got {many.cores_used:.2f} cores, others "
                  f"{many.others_cores:.2f}", efficiency, "info", None,
                  f"{efficiency:.2f} (projected {projected:.2f}× on {idle_cores} idle cores)")
    for subset in ("all", "large"):
        r = _ratio(_find(rows, "gRPC, 1 client", subset), _find(rows, "Visio engine", subset))
        check(f"gRPC c=1 vs engine in-process ({subset})", r, f"≥ {TARGET_GRPC_VS_ENGINE:g}",
              None if r is None else r >= TARGET_GRPC_VS_ENGINE)
    for subset in ("all", "large"):
        r = _ratio(_find(rows, "REST", subset), _find(rows, "gRPC, 1 client", subset))
        check(f"REST vs gRPC, 1 client ({subset})", r, f"≥ {TARGET_REST_VS_GRPC:g}",
              None if r is None else r >= TARGET_REST_VS_GRPC)
    s = info.get("soak")
    if s:
        check("server tree RSS, peak during soak", s["peak_rss_mb"], f"< {TARGET_RSS_MB:.0f} MB",
              s["peak_rss_mb"] < TARGET_RSS_MB, f"{s['peak_rss_mb']:.0f} MB")
        growth = s["growth"]
        check(f"RSS growth, request {s['checkpoints'][0]['requests']} → {s['requests']}", growth, f"< {TARGET_GROWTH:.0%}",
              None if growth is None else growth < TARGET_GROWTH, f"{growth:+.1%}" if growth is not None else "n/a")
    service_peak = max((r.peak_rss_mb for r in rows if "gRPC" in r.path or "REST" in r.path), default=None)
    if service_peak is not None:
        check("server tree RSS, peak over all service rows", service_peak, f"< {TARGET_RSS_MB:.0f} MB",
              service_peak < TARGET_RSS_MB, f"{service_peak:.0f} MB")
    if agree:
        ok = agreement_passes(agree)
        check("agreement with naive (faces + pair decisions)", None, "full agreement", ok,
              f"{agree['described_equals_1']}/{agree['single_face_photos']} photos, "
              f"{agree['visio_agrees_naive']}/{agree['pairs']} pairs")
        firm = [d for d in agree["disagreements"] if not d["borderline"]]
        borderline = len(agree["disagreements"]) - len(firm)
        check("  ↳ excluding pairs the manifest flags borderline (±0.03)", None, "full agreement",
              agree["described_equals_1"] == agree["single_face_photos"] and not firm,
              f"{len(firm)} firm, {borderline} borderline disagreement(s)")
    return checks


def markdown(result: dict[str, Any], rows: list[Row], args: argparse.Namespace) -> str:
    out: list[str] = []
    meta = result["meta"]
    out.append(f"### Benchmark ({'quick' if args.quick else 'full'} run, {meta['date']}, {meta['cpus']} CPUs, "
               f"dlib {meta['dlib']}, {args.workers} engine workers)")
    out.append("")
    out.append(f"Corpus: {meta['corpus_images']} JPEGs ({meta['corpus_mb']:.1f} MB) in `{meta['corpus']}`; "
               f"large subset (≥ 10 MP): {', '.join(meta['large_files'])}.")
    out.append("Throughput is images/s over the row's wall time; latency is per image (per request for the "
               "service rows); peak RSS is the child process for in-process rows, and the sum over `visio serve`, "
               "its engine workers and Envoy for service rows. Cores used: CPU time of the processes doing the "
               "work (the child, or the server tree without the client) / wall time; others' cores: CPU time of "
               "processes outside this benchmark (the machine is shared) / wall time.")
    out.append("")
    out.append("| path | subset | images | images/s | vs naive | p50 ms | p95 ms | peak RSS MB | cores used | "
               "others' cores |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        base = _find(rows, "naive", row.subset)
        ratio = _ratio(row, base)
        err = f" ({row.errors} errors)" if row.errors else ""
        out.append(f"| {row.path}{err} | {row.subset} | {row.images} | {row.images_per_s:.2f} | "
                   f"{_fmt(ratio, 1)}× | {percentile(row.latencies_s, 50) * 1000:.0f} | "
                   f"{percentile(row.latencies_s, 95) * 1000:.0f} | {row.peak_rss_mb:.0f} | "
                   f"{_fmt(row.cores_used)} | {_fmt(row.others_cores)} |")
    out.append("")
    out.append("| check | measured | target | result |")
    out.append("| --- | ---: | --- | --- |")
    for c in result["checks"]:
        out.append(f"| {c['check']} | {c['shown']} | {c['target']} | {c['result']} |")
    s = result.get("service", {}).get("soak")
    if s:
        out.append("")
        points = ", ".join(f"{c['requests']}: {c['rss_mb']:.0f}" for c in s["checkpoints"])
        slope = "n/a" if s["slope_mb_per_1000"] is None else f"{s['slope_mb_per_1000']:+.1f} MB per 1000 requests"
        out.append(f"Memory soak: {s['requests']} gRPC requests, {s['clients']} clients, {s['photos']} photos "
                   f"under 1 MB, {s['images_per_s']:.1f} images/s, {s['errors']} errors. Idle tree RSS (MB) after "
                   f"n requests: {points}. Growth {s['rss_after_first_mb']:.0f} → {s['rss_end_mb']:.0f} MB "
                   f"({s['growth']:+.1%}), trend {slope}; peak {s['peak_rss_mb']:.0f} MB.")
    agree = result.get("agreement")
    if agree:
        out.append("")
        out.append(f"Agreement with the naive pipeline of this run: on the {agree['single_face_photos']} photos where "
                   f"naive finds exactly one face, Visio describes exactly one face on "
                   f"{agree['described_equals_1']} (its `total_found` is 1 on {agree['total_found_equals_1']}). "
                   f"Same-person decisions at {THRESHOLD}: Visio agrees with naive on {agree['visio_agrees_naive']} "
                   f"of {agree['pairs']} labelled pairs; with the manifest's `match_at_0_6` on "
                   f"{agree['visio_agrees_manifest']} (naive: {agree['naive_agrees_manifest']}); correct vs the "
                   f"labels on {agree['visio_correct']} (naive: {agree['naive_correct']}). Distance |Visio − naive|: "
                   f"mean {agree['distance_delta_mean']}, max {agree['distance_delta_max']}.")
        for m in agree["count_mismatches"]:
            out.append(f"- count: `{m['file']}` naive 1, Visio described {m['visio_described']}, "
                       f"total_found {m['visio_total_found']}")
        for d in agree["disagreements"]:
            out.append(f"- pair `{d['a']}` / `{d['b']}` ({'same' if d['same_person'] else 'different'} person): "
                       f"naive {d['naive_distance']:.3f}, Visio {d['visio_distance']:.3f}, manifest "
                       f"{d['manifest_distance']:.3f}{' (borderline)' if d['borderline'] else ' (NOT borderline)'}")
    stages = result.get("stages_ms_per_image")
    if stages:
        out.append("")
        out.append("Where the time goes (ms per image, in-process; detect includes the resize, hog is the detector "
                   "alone):")
        out.append("")
        names = ["decode", "detect", "hog", "landmarks", "descriptor"]
        out.append("| run | total | " + " | ".join(names) + " |")
        out.append("| --- | ---: | " + " | ".join("---:" for _ in names) + " |")
        for s_row in stages:
            out.append(f"| {s_row['run']} | {s_row['total_ms']:.0f} | "
                       + " | ".join(f"{s_row[n]:.0f}" if n in s_row else "–" for n in names) + " |")
    return "\n".join(out)


def meta(corpus: Corpus, args: argparse.Namespace) -> dict[str, Any]:
    import dlib

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "dlib": dlib.__version__,
        "python": platform.python_version(), "corpus": str(args.corpus), "corpus_images": len(corpus.all),
        "corpus_mb": sum(p.stat().st_size for p in corpus.all) / 1e6,
        "large_files": [f"{p.name} ({corpus.megapixels[p.name]:.1f} MP)" for p in corpus.large],
        "loadavg_start": os.getloadavg(), "quick": args.quick, "clients": args.clients, "workers": args.workers,
    }


def main_run(args: argparse.Namespace, corpus: Corpus) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"meta": meta(corpus, args)}
    rows, raw = in_process_rows(corpus)
    in_all = {p.name for p in corpus.all}
    naive = {i["file"]: i["result"] for i in raw["naive"]["per_image"] if i["result"] is not None and i["file"] in in_all}
    engine = {i["file"]: i["result"] for i in raw["engine"]["per_image"]
              if i["result"] is not None and i["file"] in in_all}
    result["agreement"] = agreement(naive, engine, corpus.manifest)
    service_info: dict[str, Any] = {}
    if not args.no_service:
        more, service_info = service_rows(corpus, args)
        rows += more
        # The service must return what the engine computes: same number of described faces.
        engine_described = {n: sum(1 for f in r["faces"] if f["descriptor"] is not None) for n, r in engine.items()}
        service_info["count_mismatch_vs_engine"] = {
            row.path: {n: (c, engine_described.get(n)) for n, c in row.extra["described"].items()
                       if n in engine_described and c != engine_described[n]}
            for row in more if row.subset == "all"
        }
    result["service"] = service_info
    result["rows"] = [r.as_json() for r in rows]
    result["stages_ms_per_image"] = stage_table(rows)
    result["checks"] = build_checks(rows, service_info, result["agreement"], args)
    result["meta"]["loadavg_end"] = os.getloadavg()
    result["meta"]["run_s"] = round(time.perf_counter() - started, 1)
    result["markdown"] = markdown(result, rows, args)
    return result


LEVERS: list[tuple[str, dict[str, Any]]] = [
    ("default (detect 1024, 68 points, descriptor 2400)", {}),
    ("detect_max_side=640", {"detect_max_side": 640}),
    ("detect_max_side=800", {"detect_max_side": 800}),
    ("detect_max_side=1600", {"detect_max_side": 1600}),
    ("landmarks=5", {"landmarks": 5}),
    ("descriptor_max_side=1200", {"descriptor_max_side": 1200}),
]


def levers_run(args: argparse.Namespace, corpus: Corpus) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"meta": meta(corpus, args), "levers": []}
    log(f"naive dlib, in-process: all ({len(corpus.all)} images), the reference for agreement")
    naive_report = run_child("naive", corpus.all, corpus.warm)
    naive_row = child_row("naive", "all", naive_report, None)
    naive = {i["file"]: i["result"] for i in naive_report["per_image"] if i["result"] is not None}
    lines = [f"### Engine settings ({'quick' if args.quick else 'full'} run, {len(corpus.all)} photos, "
             f"naive: {naive_row.images_per_s:.2f} images/s)", "",
             "| setting | images/s | vs naive | vs default | p95 ms | peak RSS MB | one-face photos | "
             "pairs = naive | pairs = manifest | pairs correct |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    default_speed = None
    for label, overrides in LEVERS:
        log(f"engine {label}")
        report = run_child("engine", corpus.all, corpus.warm, overrides)
        row = child_row(label, "all", report, None)
        engine = {i["file"]: i["result"] for i in report["per_image"] if i["result"] is not None}
        agree = agreement(naive, engine, corpus.manifest)
        default_speed = default_speed or row.images_per_s
        entry = {"setting": label, "overrides": overrides, "row": row.as_json(),
                 "agreement": {k: v for k, v in agree.items() if k != "count_mismatches"}}
        result["levers"].append(entry)
        lines.append(f"| {label} | {row.images_per_s:.2f} | {row.images_per_s / naive_row.images_per_s:.1f}× | "
                     f"{row.images_per_s / default_speed:.2f}× | {percentile(row.latencies_s, 95) * 1000:.0f} | "
                     f"{row.peak_rss_mb:.0f} | {agree['described_equals_1']}/{agree['single_face_photos']} | "
                     f"{agree['visio_agrees_naive']}/{agree['pairs']} | {agree['visio_agrees_manifest']}/{agree['pairs']}"
                     f" | {agree['visio_correct']}/{agree['pairs']} |")
        log(f"  {row.images_per_s:.2f} images/s; pairs = naive {agree['visio_agrees_naive']}/{agree['pairs']}")
    result["naive"] = naive_row.as_json()
    result["meta"]["run_s"] = round(time.perf_counter() - started, 1)
    result["markdown"] = "\n".join(lines)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of JPEGs with manifest.json")
    parser.add_argument("--large-extra", type=Path, default=DEFAULT_LARGE_EXTRA,
                        help="an extra very large photo for the large subset (skipped when missing or --quick)")
    parser.add_argument("--quick", action="store_true", help="every third photo, no 29 MP photo, short soak (~1 min)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent gRPC clients for the scaling row and soak")
    parser.add_argument("--workers", type=int, default=2, help="engine worker processes of the benchmarked server")
    parser.add_argument("--soak", type=int, default=None,
                        help="soak requests (default 2000, about 5 minutes here; 300 with --quick)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the corpus for the concurrent gRPC row")
    parser.add_argument("--no-service", action="store_true", help="in-process rows and agreement only")
    parser.add_argument("--levers", action="store_true",
                        help="instead of the default rows: sweep detect_max_side, landmarks, descriptor_max_side")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write results (default .bench/results.json, .bench/levers.json for --levers)")
    args = parser.parse_args(argv)
    if args.soak is None:
        args.soak = 300 if args.quick else 2000
    args.checkpoint = 100 if args.quick else CHECKPOINT_EVERY
    args.corpus = args.corpus.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = load_corpus(args.corpus, args.large_extra, args.quick)
    log(f"corpus {args.corpus}: {len(corpus.all)} photos, large subset {[p.name for p in corpus.large]}")
    result = levers_run(args, corpus) if args.levers else main_run(args, corpus)
    path = args.json or (DEFAULT_JSON.with_name("levers.json") if args.levers else DEFAULT_JSON)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    print(result["markdown"])
    log(f"done in {result['meta']['run_s']:.0f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
