"""Keys shared across scvi-gen models, beyond :class:`scvi.REGISTRY_KEYS`."""

from __future__ import annotations

from typing import Final

#: Key of the provenance record written into ``AnnData.uns`` of generated data.
UNS_KEY: Final = "scvi_gen"
#: Layer holding log1p(CP10k) values of generated data from continuous models.
LOGNORM_LAYER: Final = "log1p_norm"
#: File names of a saved model: tensors (safetensors, which holds no code) and JSON metadata.
WEIGHTS_FILE: Final = "model.safetensors"
#: Weights of models saved before safetensors (read with ``torch.load(weights_only=True)``).
STATE_FILE: Final = "model_state.pt"
META_FILE: Final = "model_meta.json"
ADATA_FILE: Final = "adata.h5ad"
MDATA_FILE: Final = "mdata.h5mu"
#: Default number of cells generated per chunk.
DEFAULT_GENERATION_CHUNK: Final = 1024
#: Column scvi-tools writes when no labels key is registered.
SCVI_DEFAULT_LABELS: Final = "_scvi_labels"
SCVI_DEFAULT_BATCH: Final = "_scvi_batch"
#: Generator name of the real-vs-real reference rows in benchmark results and plots.
FLOOR: Final = "floor (real held-out)"
