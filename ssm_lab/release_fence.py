"""Version fences for work-arounds of a library's internals: is the installed release the line they were written for?"""
from __future__ import annotations


def on_release_line(version: str, tested: str) -> bool:
    """`tested` is a release line such as "6.31": "6.31" and "6.31.2" are on it, "6.310" and "6.32.0" are not."""
    return version == tested or version.startswith(tested + ".")


def untested_release_message(library: str, version: str, tested: str, module: str, what: str) -> str | None:
    """None on the tested line, else a message naming both versions, the module to revisit and what to check."""
    if on_release_line(version, tested):
        return None
    return (f"{library} {version} is installed, but {module} was written for {library} {tested}.x "
            f"(requirements.txt pins it): check {what} against this version")
