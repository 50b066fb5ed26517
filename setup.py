"""Only the licence, which pyproject.toml declares dynamic: everything else is in pyproject.toml.

setuptools >= 77 (Python >= 3.9) takes the SPDX expression (core metadata 2.4 License-Expression) and deprecates
the older ``license = {text = ...}`` table; setuptools < 77, the newest on Python 3.8, rejects the SPDX string
in pyproject.toml. Each gets the form it supports. LICENSE is packed by both (their default license-files).
"""
import setuptools
from setuptools import setup

if int(setuptools.__version__.split(".")[0]) >= 77:
    setup(license_expression="Apache-2.0")
else:
    setup(license="Apache-2.0")
