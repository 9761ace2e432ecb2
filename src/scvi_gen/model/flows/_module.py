"""The scvi-tools module shared by the conditional flows: representation, context, zuko flow."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import Tensor
from zuko.distributions import DiagNormal
from zuko.lazy import Flow, LazyTransform, UnconditionalDistribution

from scvi_gen.model.flows._conditioning import CategoricalSlot, ConditionEncoder
from scvi_gen.model.flows._layers import ActNorm
from scvi_gen.model.flows._representation import LogNormRepresentation
from scvi_gen.model.flows._sampling import sample_flow

logger = logging.getLogger(__name__)

#: Builds the flow's layers from ``(n_genes, context_dim)``.
TransformBuilder = Callable[[int, int], Sequence[LazyTransform]]

_CONDITION_KEYS = (
    REGISTRY_KEYS.LABELS_KEY,
    REGISTRY_KEYS.BATCH_KEY,
    REGISTRY_KEYS.CAT_COVS_KEY,
    REGISTRY_KEYS.CONT_COVS_KEY,
)


class ConditionalFlowModule(BaseModuleClass):
    """Exact-likelihood conditional normalizing flow over log1p(CP10k) gene expression.

    ``loss()`` is the negative log-likelihood per cell (in the standardised space), returned as
    ``reconstruction_loss`` of a :class:`~scvi.module.base.LossOutput`, so the stock
    :class:`~scvi.train.TrainingPlan` trains it and early stopping monitors
    ``validation_loss``. ActNorm layers are initialised before training from a sample of
    cells (:func:`~scvi_gen.model.flows.fit_module_state`); a module trained without that
    initialises them from its first training batch.

    Parameters
    ----------
    n_genes
        Number of modelled genes.
    build_transforms
        Builds the flow layers from ``(n_genes, context_dim)``.
    slots
        Categorical conditions (labels first).
    n_continuous
        Number of continuous covariates.
    embedding_dim
        Dimension of each categorical embedding.

    Examples
    --------
    >>> module = ConditionalFlowModule(2000, partial(maf_transforms, n_transforms=4), slots, 0)
    """

    def __init__(
        self,
        n_genes: int,
        build_transforms: TransformBuilder,
        slots: Sequence[CategoricalSlot] = (),
        n_continuous: int = 0,
        embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.representation = LogNormRepresentation(n_genes)
        self.conditions = ConditionEncoder(slots, n_continuous, embedding_dim)
        context = self.conditions.output_dim
        base = UnconditionalDistribution(
            DiagNormal, torch.zeros(n_genes), torch.ones(n_genes), buffer=True
        )
        self.flow = Flow(list(build_transforms(n_genes, context)), base)
        self.register_buffer("initialized", torch.tensor(False))

    # ----------------------------------------------------------------- helpers
    @property
    def layers(self) -> list[LazyTransform]:
        """The flow's layers, from data to noise."""
        return list(self.flow.transform.transforms)

    def context(self, conditions: Mapping[str, Tensor], library: Tensor) -> Tensor | None:
        """The context vector of each cell (conditions and library size)."""
        return self.conditions(conditions, library)

    @torch.no_grad()
    def data_dependent_init(self, z: Tensor, c: Tensor | None) -> None:
        """Initialise every ActNorm layer from the activations of one batch arriving at it.

        Parameters
        ----------
        z
            ``(n, n_genes)`` cells in the flow's space (:meth:`LogNormRepresentation.encode`).
        c
            Their context (:meth:`context`), or ``None``.
        """
        for layer in self.layers:
            if isinstance(layer, ActNorm) and not bool(layer.initialized):
                layer.initialize(z)
            z = layer(c)(z)
        self.initialized.fill_(True)

    def flow_log_prob(self, z: Tensor, c: Tensor | None) -> Tensor:
        """``log p(z | c)`` of standardised values ``z``, one value per cell."""
        return self.flow(c).log_prob(z)

    # ------------------------------------------------------- scvi-tools module
    def _get_inference_input(self, tensors: dict[str, Tensor], **kwargs: Any) -> dict:
        conditions = {k: tensors[k] for k in _CONDITION_KEYS if k in tensors}
        return {"x": tensors[REGISTRY_KEYS.X_KEY], "conditions": conditions}

    def _get_generative_input(
        self, tensors: dict[str, Tensor], inference_outputs: dict, **kwargs: Any
    ) -> dict:
        return {}

    @auto_move_data
    def inference(self, x: Tensor, conditions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Log-likelihood of each cell (counts dequantised at random while training)."""
        z = self.representation.encode(x, dequantize=self.training)
        c = self.context(conditions, x.sum(dim=-1, keepdim=True))
        if self.training and not bool(self.initialized):
            self.data_dependent_init(z, c)
        return {"log_prob": self.flow_log_prob(z, c)}

    def generative(self, **kwargs: Any) -> dict:
        """Nothing to do: the flow's likelihood is computed in :meth:`inference`."""
        return {}

    def loss(
        self, tensors: dict[str, Tensor], inference_outputs: dict, generative_outputs: dict
    ) -> LossOutput:
        """Mean negative log-likelihood per cell; per-cell values as ``reconstruction_loss``."""
        nll = -inference_outputs["log_prob"]
        return LossOutput(
            loss=nll.mean(),
            reconstruction_loss=nll,
            extra_metrics={"nll_per_gene": nll.mean().detach() / self.n_genes},
        )

    @auto_move_data
    def log_prob(self, tensors: dict[str, Tensor]) -> Tensor:
        """Exact log-density of each cell's dequantised log1p(CP10k) profile (``u = 1/2``).

        Parameters
        ----------
        tensors
            A minibatch from an scvi-tools data loader.

        Returns
        -------
        ``(n,)`` log-densities, in log1p(CP10k) units (the standardisation's Jacobian is
        included).
        """
        inputs = self._get_inference_input(tensors)
        x = inputs["x"]
        z = self.representation.encode(x, dequantize=False)
        c = self.context(inputs["conditions"], x.sum(dim=-1, keepdim=True))
        log_prob = self.flow_log_prob(z, c)
        return log_prob + self.representation.log_abs_det()

    @torch.inference_mode()
    def sample(self, conditions: Mapping[str, Tensor], library: Tensor) -> tuple[Tensor, Tensor]:
        """Sample cells for the given conditions and library sizes.

        Parameters
        ----------
        conditions
            ``{registry_key: tensor}`` with one row per cell.
        library
            ``(n, 1)`` library sizes (total counts over all genes) of the new cells.

        Returns
        -------
        ``(n, n_genes)`` log1p(CP10k) values and the integer counts they come from (never
        negative).
        """
        c = self.context(conditions, library)
        if c is None:
            z = sample_flow(self.flow, (len(library),))
        else:
            z = sample_flow(lambda: self.flow(c))
        return self.representation.decode(z, library)
