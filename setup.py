"""Install tbps_mm: ``pip install -e .`` (add ``[tests]`` for the test tools,
``[deploy]`` for ONNX export and onnxruntime, ``[serve]`` for the search page,
``[analysis]`` for tools/analysis_tools, ``[video]`` for video search)."""

import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name: str) -> list:
    """Read one requirements file, skipping comments and blank lines."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'requirements', name)
    with open(path, encoding='utf-8') as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


def read_version() -> str:
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'tbps_mm', 'version.py')
    scope: dict = {}
    with open(path, encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='tbps_mm',
    version=read_version(),
    description='Text-based person search with part-level cross-modal '
    'correspondence, as an OpenMMLab (MMEngine / MMPretrain) plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['tbps_mm', 'tbps_mm.*', 'tbps_mm_serve']),
    include_package_data=True,
    package_data={'tbps_mm_serve': ['static/*.html', 'static/*.css', 'static/*.js']},
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'deploy': read_requirements('deploy.txt'),
        'serve': read_requirements('serve.txt'),
        'analysis': read_requirements('analysis.txt'),
        'milvus': read_requirements('milvus.txt'),
        'video': read_requirements('video.txt'),
        # The tests cover the deploy, serve, analysis, milvus and video extras too.
        'tests': read_requirements('tests.txt')
        + read_requirements('deploy.txt')
        + read_requirements('serve.txt')
        + read_requirements('analysis.txt')
        + read_requirements('milvus.txt')
        + read_requirements('video.txt'),
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
