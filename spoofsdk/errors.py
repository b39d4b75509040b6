"""Typed errors. Every failure a caller can act on has its own class; all derive from SpoofSDKError."""


class SpoofSDKError(Exception):
    """Base class of every error spoofsdk raises on purpose."""


class ImageError(SpoofSDKError, ValueError):
    """An input image cannot be read or has an unsupported shape/dtype."""


class ModelError(SpoofSDKError):
    """A model file is missing, corrupted, tampered with, or cannot run."""


class MetadataError(ModelError):
    """A model file lacks valid spoofsdk metadata."""


class DetectorError(SpoofSDKError):
    """The face detector cannot be created or fails."""


class SourceError(SpoofSDKError):
    """A camera, video file or image folder cannot be opened or read."""
