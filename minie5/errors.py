"""The exceptions minie5 raises on its own account, and json_type() for their messages.

Every error about a model directory names the file (and, where there is one,
the field or tensor) at fault, so that a user can fix the file without reading
minie5's source.
"""
from __future__ import annotations


class Minie5Error(Exception):
    """Base class of every error minie5 raises about models and inputs."""


class ModelFileError(Minie5Error, ValueError):
    """A model file is missing, unreadable, or does not hold what it should."""

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class UnsupportedModelError(ModelFileError):
    """The model files are well formed but describe something minie5 cannot run."""


class InputError(Minie5Error, ValueError):
    """An input minie5 cannot use: a line of a text file, an option value.

    Errors about a file name it and, where there is one, the line number.
    """

    def __init__(self, message: str, path=None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}: " if line is None else f"{self.path}: line {line}: "
        super().__init__(where + message)


def json_type(value, article: bool = False) -> str:
    """A parsed JSON value's type, for error messages: "object", "array", "string", "number", "boolean", "null".

    article=True: "an object", "a list", "a string"... (the server's wording: OpenAI's API says list).
    """
    if value is None:
        return "null"
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    name = names.get(type(value), type(value).__name__)
    if not article:
        return name
    name = "list" if name == "array" else name
    return ("an " if name[0] in "aeiou" else "a ") + name


class UnsupportedArgumentError(Minie5Error, ValueError):
    """An argument of another library's API (sentence-transformers, LangChain...) that minie5 cannot honour."""


class Minie5Warning(UserWarning):
    """Base class of the warnings minie5 gives."""


class TruncationWarning(Minie5Warning):
    """Some texts were longer than max_length tokens and only their beginning was embedded."""
