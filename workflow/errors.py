"""User-facing errors: one line on stderr and exit status 2, never a traceback."""
import argparse
import functools
import sys


class UserError(Exception):
    """A mistake in the user's input (params, files, paths) that the user can fix."""


def cli(main):
    """Wrap a stage's ``main`` so that a UserError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def positive_int(text):
    """argparse type: an integer >= 1 (a bad value is argparse's one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value
