"""Configs shipped with FLOAT-RT: installed as the package data ``float_rt.configs`` (see pyproject.toml)."""
