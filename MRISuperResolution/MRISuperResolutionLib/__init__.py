"""Everything of the MRISuperResolution module that is not Qt: it imports under slicer-core alone.

- parameters: EnhanceParameters, and the method catalog, limits and run plans the backend answers with
- process: the backend CLI in a background process, progress lines, cancel of the process tree
- nodeio: volume nodes to/from temporary files, output volumes with their own geometry
- difference: difference map, diverging colours, symmetric window, legend
- layout: the Input / Enhanced / Difference / Overlay comparison layout
- dependencies: backend checks and installation into Slicer's Python (never at import time)
- estimates: expected run times per method
- tissues: tissue segmentation nodes of input and output and their agreement table
- logic: EnhanceLogic, the console API, and EnhanceJob
"""

from .logic import EnhanceJob, EnhanceLogic
from .parameters import EnhanceCancelled, EnhanceError, EnhanceParameters, MethodCatalog, MethodInfo

__all__ = ["EnhanceCancelled", "EnhanceError", "EnhanceJob", "EnhanceLogic", "EnhanceParameters", "MethodCatalog",
           "MethodInfo"]
