"""Audio/text encoders. Importing this package registers the built-in encoders."""

from .base import (  # noqa: F401
    AudioEncoder,
    TextEncoder,
    autocast_dtype,
    available_encoders,
    best_device,
    build_encoder,
    register_encoder,
)

# Built-in encoders register themselves on import; each encoder module adds its import here.
from . import aisfx  # noqa: E402,F401
from . import ms_clap, clapcap  # noqa: E402,F401
from . import laion_clap, hf_clap  # noqa: E402,F401
