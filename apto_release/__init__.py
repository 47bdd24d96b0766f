"""apto-release: cut Japanese LLM-safety releases on the Hugging Face Hub.

Importing the package is cheap: nothing heavy (torch, transformers, datasets) is imported here.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
