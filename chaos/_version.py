"""The installed distribution's version (kept apart so internal modules can import it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inference-chaos")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
