"""sail-lite: a fast TokenCompleter for sampling Tinker RL rollouts on Sail."""
from sail_lite._core import __version__

__all__ = ["__version__"]
