"""Regenerates the Python stubs and the Envoy descriptor set from protos/ (run by `make protos`)."""

from __future__ import annotations

import re
import shutil
import sys
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


def main() -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    shutil.rmtree(OUT / "visio", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    # Our own protos only: generated google/* modules would shadow googleapis-common-protos.
    run_protoc([f"--python_out={OUT}", f"--pyi_out={OUT}", f"--grpc_python_out={OUT}", *sources])
    for generated in OUT.rglob("*.py*"):
        text = generated.read_text()
        fixed = re.sub(r"^from visio\.", "from visio_grpc._proto.visio.", text, flags=re.M)
        generated.write_text(fixed)
    for package in [OUT, *(p for p in OUT.rglob("*") if p.is_dir())]:
        (package / "__init__.py").touch()
    DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
    run_protoc(["--include_imports", f"--descriptor_set_out={DESCRIPTOR_SET}", *sources, *EXTRA_FOR_ENVOY])
    print(f"generated {len(sources)} proto file(s) into {OUT.relative_to(ROOT)} and {DESCRIPTOR_SET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
