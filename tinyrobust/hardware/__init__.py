"""Hardware cost model: analytic counters, TFLite export, TFLM arena, boards.

  count(model, variables, input_shape)        jaxpr-derived params/MACs/FLOPs,
                                              layers, SRAM estimates
  export_tflite(model, variables, input_shape, quantize=None|'int8', ...)
  measure_tflm(tflite_bytes)                  measured TFLite-Micro arena
  get_board(name|dict), list_boards(), fits(profile, board)
  profile(model, variables, input_shape)      all of the above in one dict
  deployed_cost(model, variables, input_shape, precision=...)
                                              flash + SRAM of one precision
                                              (the search's costing path)

Profiling a trained run (`--mode=profile`) is `tinyrobust.modes.profile`.

TensorFlow, LiteRT and TFLite Micro are imported lazily, only by export and
measurement.
"""

from tinyrobust.hardware.boards import fits
from tinyrobust.hardware.boards import get_board
from tinyrobust.hardware.boards import list_boards
from tinyrobust.hardware.counters import count
from tinyrobust.hardware.export import export_tflite
from tinyrobust.hardware.profile import deployed_cost
from tinyrobust.hardware.profile import profile
from tinyrobust.hardware.profile import representative
from tinyrobust.hardware.tflm import measure_tflm

__all__ = ['count', 'deployed_cost', 'export_tflite', 'fits', 'get_board',
           'list_boards', 'measure_tflm', 'profile', 'representative']
