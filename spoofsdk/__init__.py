"""spoofsdk: face anti-spoofing (presentation attack detection) for edge devices."""
__version__ = "0.1.0"
