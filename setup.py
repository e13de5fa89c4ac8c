"""Only a fix for editable installs; everything else is configured in pyproject.toml.

`pip install -e .` (what `make setup` runs) must install the files of
``[tool.setuptools.data-files]`` (the JupyterLab extension, its server-extension switch, the tour
notebooks) as a wheel install does. setuptools' ``editable_wheel`` means to ("data files are
written directly to the unpacked wheel"), but asks the distribution ``has_data()``, which only
the ``install`` command defines, so it silently skips them (pypa/setuptools#3399; still so in
setuptools 84). The distribution below answers that question.
"""

from setuptools import setup
from setuptools.dist import Distribution


class _Distribution(Distribution):
    def has_data(self) -> bool:  # what editable_wheel asks before it runs install_data
        return self.has_data_files()


setup(distclass=_Distribution)
