"""autoseg: self-configuring segmentation for peripheral-nerve imaging."""

from setuptools import find_packages, setup

setup(
    name="autoseg",
    version="0.1.0",
    description="Self-configuring segmentation (nnU-Net style) for nerve imaging",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["autoseg", "autoseg.*"]),
    install_requires=[
        # torch is installed first by the Makefile as the CPU wheel torch==2.13.0; any range
        # here that 2.13.0 satisfies installs nothing more.
        "torch>=2.1",
        "numpy>=1.24",
        "SimpleITK>=2.3",
        "batchgenerators>=0.25",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        # scipy: resampling and distance transforms; connected-components-3d: fast labelling
        # of components in 2D/3D for fingerprints and post-processing; matplotlib: plots.
        "scipy>=1.10",
        "connected-components-3d>=3.12",
        "matplotlib>=3.7",
        # Pillow reads palette PNG masks as indices (SimpleITK expands palettes to RGB).
        "Pillow>=9",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["autoseg=autoseg.cli:main"]},
)
