"""MMHisto: OpenMMLab components for computational pathology with incomplete labels."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>``, without comments."""
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]


setup(
    name='mmhisto',
    version='0.1.0',
    description='OpenMMLab plugin for computational pathology with incomplete labels',
    long_description=(HERE / 'README.md').read_text() if (HERE / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['projects', 'projects.*']),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        mm=read_requirements('mminstall.txt'), tests=read_requirements('tests.txt'),
        slide=read_requirements('optional.txt')),
    license='Apache-2.0',
    zip_safe=False,
)
