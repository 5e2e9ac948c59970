"""SSD core: three equal forms (forms.py), the dispatch point (dispatch.py), tolerances (tolerances.py)."""

from promptcot_mamba.ssd.dispatch import BACKENDS, available_backends, register_backend, ssd
from promptcot_mamba.ssd.forms import ssd_chunked, ssd_quadratic, ssd_recurrent, ssd_step

__all__ = ["ssd", "ssd_step", "ssd_chunked", "ssd_quadratic", "ssd_recurrent", "BACKENDS",
           "register_backend", "available_backends"]
