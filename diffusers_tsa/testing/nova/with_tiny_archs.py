"""`python -m diffusers_tsa.testing.nova.with_tiny_archs FILE ARGS...`: runs the Python file FILE (as `__main__`, with
ARGS) after registering the small archs of `save_tiny_real_nova_pipeline` on the real `diffnext`, as NOVA's own
configs register its archs when imported. A process a test launches (the training script, a model card's code) can
then build that tiny checkpoint, whose transformer config names these archs."""

import runpy
import sys

from diffusers_tsa.testing.nova import register_tiny_nova_archs


register_tiny_nova_archs()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
