"""memclean: find what a network would have to memorize, and clean it out."""

from memclean.errors import MemcleanError

__all__ = ["MemcleanError", "__version__"]
__version__ = "0.1.0"
