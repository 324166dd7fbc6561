"""Installs the tinyrobust package (`pip install -e .`)."""

import setuptools

setuptools.setup(
    name='tinyrobust',
    version='0.1.0',
    description=('Adversarial robustness of TinyML models and robust, '
                 'MCU-aware architecture search in JAX/Flax.'),
    packages=setuptools.find_packages(include=['tinyrobust', 'tinyrobust.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax', 'flax', 'optax', 'chex', 'ml-collections', 'absl-py', 'numpy',
        'scikit-learn', 'scikit-optimize', 'tqdm',
    ],
    extras_require={
        'data': ['tensorflow-cpu', 'tensorflow-datasets', 'sktime'],
        'hardware': ['tensorflow-cpu', 'tflite-micro', 'ai-edge-litert'],
        'ray': ['ray'],
    },
)
