"""Configs shipped with FLOAT-RT (package data, read through importlib.resources)."""
