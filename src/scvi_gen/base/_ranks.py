"""Which process this is, when a script runs on several (Lightning's DDP relaunches it).

With ``strategy="ddp"`` Lightning runs the user's whole script once per device. Training
keeps the copies of the model identical; writing files must happen once, on global rank 0,
or every rank would write the same directory or store at the same time.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def global_rank() -> int:
    """The global rank of this process in an initialised process group, else 0.

    Returns
    -------
    The rank (0 outside distributed runs).

    Examples
    --------
    >>> global_rank()
    0
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


def writes_files(what: str) -> bool:
    """Whether this process should write ``what`` (only global rank 0 does).

    Parameters
    ----------
    what
        What would be written, for the log message of the other ranks.

    Returns
    -------
    ``True`` on rank 0 or outside distributed runs.

    Examples
    --------
    >>> writes_files("the model")
    True
    """
    rank = global_rank()
    if rank != 0:
        logger.info("Rank %d: %s is written by rank 0 only.", rank, what)
    return rank == 0
