"""radlens: radiograph AI that runs offline on a CPU laptop."""

__version__ = "0.1.0"
