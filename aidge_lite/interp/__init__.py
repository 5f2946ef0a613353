"""Interpreters: one graph walk (`base`), several op tables."""
from .base import Interpreter
from .reference import ReferenceInterpreter, run

__all__ = ["Interpreter", "ReferenceInterpreter", "run"]
