"""The ``mst-clipiqa`` application: the command line and the demo.

This is the outermost layer. It may import ``reward`` and ``integrations``; neither imports it, so the
libraries stay free of argument parsing, and ``reward`` never depends on diffusers through the CLI.
"""
