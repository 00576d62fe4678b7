"""The tbps_mm version string."""

__version__ = '0.1.0'
