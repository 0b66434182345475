"""Run a whole study (here Hinton's teacher / student / distilled student) from Python.

    python examples/study_from_python.py [OUT_DIR]

The mapping is exactly what a YAML config holds (see configs/); finished runs in OUT_DIR are read
back, never retrained, so a second call only prints the table.
"""

import sys
import tempfile

import distillab

config = {
    "recipe": "hinton",
    "data": {"source": "digits", "val_size": 200, "batch_size": 64},
    "seeds": [0, 1],
    "teacher": {"model": {"name": "mlp:256-256"}, "train": {"epochs": 8, "optim": {"lr": 0.05}}},
    "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 8, "optim": {"lr": 0.05}}},
    "distill": {"temperature": 4, "alpha": 0.9},
}
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="distillab-study-")
print(distillab.run_study(config, out))
print(f"runs in {out}")
