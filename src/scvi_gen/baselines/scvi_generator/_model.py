"""SCVIGenerator: the scVI baseline generator (prior sampling, label-conditional)."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin

from scvi_gen.base import GenerativeMixin
from scvi_gen.base._training_checks import warn_if_undertrained
from scvi_gen.baselines.scvi_generator._module import LabelPosteriorMoments, LabelPriorVAE
from scvi_gen.baselines.scvi_generator._whatif import SCVIWhatIfMixin

logger = logging.getLogger(__name__)


class SCVIGenerator(
    SCVIWhatIfMixin,
    GenerativeMixin,
    RNASeqMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """scVI as a generator: sample the latent prior, decode, sample NB counts.

    The baseline every other scvi-gen generator must beat. With labels registered and
    ``conditional_prior=True`` the prior is one learned Gaussian per label, so
    ``generate(labels=...)`` samples label-specific latents; with ``conditional_prior=False``
    it samples scVI's standard normal prior (labels then only steer library sizes).
    Library sizes come from the per-condition log-normal model fitted on the training cells.
    :meth:`transfer` and :meth:`predict_perturbation` change a label by scGen's latent
    arithmetic and a batch or categorical covariate in the decoder; :meth:`interpolate`
    decodes along straight paths between posterior means.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (raw counts). ``None`` with ``registry``
        when loading.
    registry
        Registry of a saved model (used by :meth:`load`).
    n_hidden
        Hidden units per layer.
    n_latent
        Latent dimension.
    n_layers
        Hidden layers of encoder and decoder.
    dropout_rate
        Dropout in the encoder.
    gene_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    conditional_prior
        Learn one Gaussian prior per label.
    **vae_kwargs
        Further keyword arguments of :class:`scvi.module.VAE`.

    Examples
    --------
    >>> scvi_gen.SCVIGenerator.setup_anndata(adata, labels_key="cell_type")
    >>> model = scvi_gen.SCVIGenerator(adata)
    >>> model.train(max_epochs=200)
    >>> syn = model.generate(labels={"B": 50}, seed=0)
    >>> stim = model.predict_perturbation(ctrl, "condition", "STIM", group_key="cell_type")
    """

    _module_cls = LabelPriorVAE

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb",
        conditional_prior: bool = True,
        **vae_kwargs: Any,
    ):
        super().__init__(adata, registry=registry)
        n_cats_per_cov = self._n_cats_per_cov() or None
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=self.summary_stats.n_batch,
            n_labels=self.summary_stats.n_labels,
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            n_cats_per_cov=n_cats_per_cov,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            gene_likelihood=gene_likelihood,
            conditional_prior=conditional_prior,
            **vae_kwargs,
        )
        self._model_summary_string = (
            f"SCVIGenerator: n_latent {n_latent}, likelihood {gene_likelihood}, "
            f"{'label-conditional' if conditional_prior else 'standard normal'} prior"
        )
        self._init_generative_state(adata)
        self.init_params_ = self._get_init_params(locals())

    def train(self, *args: Any, datamodule: Any = None, **kwargs: Any) -> None:
        """Train through scvi-tools, then set the label priors to their optimum.

        Takes the arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`
        (``max_epochs``, ``early_stopping``, ``accelerator``, ``datamodule`` ...). After
        training, each label's Gaussian prior is set to the moment match of its training
        cells' posteriors (see :meth:`LabelPriorVAE.fit_prior_to_posterior`), accumulated
        over minibatches, so sampling the prior lands where that label's cells are.
        """
        self._ensure_data_state(datamodule)
        # scvi-tools' own signature gives the split arguments and their defaults.
        bound = inspect.signature(UnsupervisedTrainingMixin.train).bind_partial(
            self, *args, **kwargs
        )
        bound.apply_defaults()
        given = bound.arguments
        self._check_training_cells(
            datamodule,
            train_size=given.get("train_size"),
            validation_size=given.get("validation_size"),
            batch_size=given.get("batch_size"),
            needs_validation=bool(given.get("early_stopping")),
        )
        super().train(*args, datamodule=datamodule, **kwargs)
        # The ELBO without KL warm-up: validation_loss rises while the KL weight ramps up.
        warn_if_undertrained(
            self.history_,
            given.get("max_epochs"),
            model=type(self).__name__,
            monitor="elbo_validation",
        )
        self._fit_label_priors(datamodule)

    def _fit_label_priors(self, datamodule: Any = None) -> None:
        if not self.module.conditional_prior:
            return
        module = self.module
        moments = LabelPosteriorMoments(module.prior_mean.shape[0], module.prior_mean.shape[1])
        loader = (
            self._make_data_loader(self.adata, batch_size=1024, shuffle=False)
            if datamodule is None
            else datamodule.train_dataloader()
        )
        for tensors in loader:
            means, variances = self.get_latent_representation(
                return_dist=True, dataloader=[tensors]
            )
            moments.update(
                torch.as_tensor(means),
                torch.as_tensor(variances),
                torch.as_tensor(np.asarray(tensors[REGISTRY_KEYS.LABELS_KEY])).view(-1),
            )
        module.fit_prior_to_moments(moments)

    def _generate_chunk(
        self,
        conditions: dict[str, torch.Tensor],
        library: torch.Tensor | None,
        guidance: Any,
    ) -> torch.Tensor | sp.csr_matrix:
        return self.module.sample_new_cells(conditions, library)
