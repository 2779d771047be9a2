"""tunebench: instruction fine-tuning with numbers that show what it did."""

__version__ = "0.1.0"
