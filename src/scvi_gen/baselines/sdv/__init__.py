"""SDV synthesizers (GaussianCopula, CTGAN, TVAE) as scvi-gen generators.

An optional extra: ``pip install 'scvi-gen[sdv]'``. SDV and its ``ctgan``, ``copulas`` and
``rdt`` dependencies are distributed under the Business Source License 1.1; scvi-gen does not
vendor their code and imports them only when one of these models is trained or loaded, so
importing this sub-package does not import ``sdv``.
"""

from ._copula import GaussianCopulaGenerator
from ._ctgan import CTGANGenerator
from ._sdv import LICENSE_NOTE
from ._tvae import TVAEGenerator

__all__ = ["LICENSE_NOTE", "CTGANGenerator", "GaussianCopulaGenerator", "TVAEGenerator"]
