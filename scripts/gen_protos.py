"""Regenerates the Python stubs and the Envoy descriptor set from protos/ (run by `make protos`)."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from google.api import annotations_pb2  # googleapis-common-protos ships the google/api and google/rpc .proto sources
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "visio_grpc" / "_proto"
DESCRIPTOR_SET = ROOT / "gateway" / "visio.pb"
GOOGLEAPIS_INCLUDE = Path(annotations_pb2.__file__).resolve().parents[2]
PROTOBUF_INCLUDE = Path(protoc.__file__).resolve().parent / "_proto"
# Envoy renders rich errors only if these message types are in its descriptor pool.
EXTRA_FOR_ENVOY = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def run_protoc(args: list[str]) -> None:
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{GOOGLEAPIS_INCLUDE}", f"-I{PROTOBUF_INCLUDE}", *args])
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def generate(out: Path, descriptor_set: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    shutil.rmtree(out / "visio", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # Our own protos only: generated google/* modules would shadow googleapis-common-protos.
    run_protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *sources])
    for generated in out.rglob("*.py*"):
        text = generated.read_text()
        fixed = re.sub(r"^from visio\.", "from visio_grpc._proto.visio.", text, flags=re.M)
        generated.write_text(fixed)
    for package in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (package / "__init__.py").touch()
    descriptor_set.parent.mkdir(parents=True, exist_ok=True)
    run_protoc(["--include_imports", f"--descriptor_set_out={descriptor_set}", *sources, *EXTRA_FOR_ENVOY])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> None:
    if "--check" not in sys.argv:
        generate(OUT, DESCRIPTOR_SET)
        print(f"generated {OUT.relative_to(ROOT)} and {DESCRIPTOR_SET.relative_to(ROOT)} from {PROTO_ROOT.name}/")
        return
    # Regenerate into a scratch folder and compare: CI fails on any difference.
    with tempfile.TemporaryDirectory() as scratch:
        fresh_out, fresh_set = Path(scratch) / "_proto", Path(scratch) / "visio.pb"
        generate(fresh_out, fresh_set)
        stale = sorted(
            name for name in _files(fresh_out).keys() | _files(OUT).keys()
            if _files(fresh_out).get(name) != _files(OUT).get(name)
        )
        if fresh_set.read_bytes() != DESCRIPTOR_SET.read_bytes():
            stale.append(str(DESCRIPTOR_SET.relative_to(ROOT)))
    if stale:
        sys.exit(f"generated code is stale ({', '.join(stale)}): run 'make protos' and commit the result")
    print("generated code is up to date")


if __name__ == "__main__":
    main()
