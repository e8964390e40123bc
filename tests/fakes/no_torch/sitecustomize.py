"""On PYTHONPATH, makes this interpreter one without torch and the converters (as on a device or a CI job
that installed only requirements-device.txt): importing them raises ModuleNotFoundError."""
import sys

BLOCKED = ("torch", "torchvision", "torchao", "litert_torch", "ai_edge_torch", "ai_edge_quantizer", "tensorflow",
           "jax", "transformers", "onnxsim")


class _NoTorch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a torch-free environment)", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
