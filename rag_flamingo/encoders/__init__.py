"""Audio/text encoders. Importing this package registers the built-in encoders."""

# Built-in encoders register themselves on import; each encoder module adds its import here.
from . import (  # noqa: E402,F401  # noqa: E402,F401
    aisfx,  # noqa: E402,F401
    clapcap,
    hf_clap,
    laion_clap,
    ms_clap,
)
from .base import (  # noqa: F401
    AudioEncoder,
    TextEncoder,
    autocast_dtype,
    available_encoders,
    best_device,
    build_encoder,
    register_encoder,
)
