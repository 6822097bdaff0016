"""Sphinx configuration for the autoclip-optax documentation.

Built by ``bash .ci/run`` (and by hand, see CONTRIBUTING.md) with
``sphinx-build -W`` (HTML) and ``sphinx-build -b doctest`` (every
``{testcode}`` block on every page runs).
"""

import pathlib

import autoclip_optax

project = 'autoclip-optax'
author = 'autoclip-optax authors'
copyright = '2026, autoclip-optax authors'
release = autoclip_optax.__version__
version = release

extensions = [
  'myst_parser',
  'sphinx.ext.autodoc',
  'sphinx.ext.doctest',
  'sphinx.ext.napoleon',
]

source_suffix = {'.md': 'markdown'}
exclude_patterns = ['_build']
# Headings get anchors, so that pages link to a section by its title.
myst_heading_anchors = 3

autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
# Hyperparameters read as jax.typing.ArrayLike, not the union it stands for.
autodoc_type_aliases = {'jax.typing.ArrayLike': 'jax.typing.ArrayLike'}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# The docstrings' ``>>>`` examples run under pytest --doctest-modules; the
# doctest builder runs the pages' {testcode} blocks, and index.md runs the
# README's usage block from this path.
doctest_test_doctest_blocks = ''
doctest_global_setup = (
  f'README = {str(pathlib.Path(__file__).parents[1] / "README.md")!r}'
)

html_theme = 'sphinx_book_theme'
html_title = 'autoclip-optax'
html_theme_options = {
  'show_toc_level': 2,
}
html_static_path = ['_static']
html_css_files = ['wide_tables.css']
