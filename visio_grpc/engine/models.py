"""Where dlib's model files are: the face-recognition-models package's models/ folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SHAPE_PREDICTORS = {68: "shape_predictor_68_face_landmarks.dat", 5: "shape_predictor_5_face_landmarks.dat"}
RESNET = "dlib_face_recognition_resnet_model_v1.dat"


def models_dir() -> Path:
    # The package's __init__ imports pkg_resources (gone from recent setuptools): find it without
    # importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed: run 'make install'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    if not (folder / RESNET).is_file():
        raise RuntimeError(f"dlib model files are missing from {folder}: reinstall face-recognition-models")
    return folder
