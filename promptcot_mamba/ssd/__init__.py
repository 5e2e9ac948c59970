"""SSD core: three equal forms (forms.py), the dispatch point and its backend table (dispatch.py),
the optional GPU kernels (optional_backends.py, triton_scan.py, triton_step.py)."""

from promptcot_mamba.ssd.dispatch import BACKENDS, available_backends, ssd
from promptcot_mamba.ssd.forms import ssd_chunked, ssd_quadratic, ssd_recurrent, ssd_step

__all__ = ["ssd", "ssd_step", "ssd_chunked", "ssd_quadratic", "ssd_recurrent", "BACKENDS", "available_backends"]
