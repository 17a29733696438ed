"""Output distributions (heads): what a prior outputs per position. See priors/heads/base.py."""

from priors.heads.base import PMF_PRECISION, Head, HeadConfig, build_head, head_spec
from priors.heads.bernoulli import Bernoulli
from priors.heads.categorical import Categorical
from priors.heads.gaussian import Gaussian, GaussianMixture
from priors.heads.logistic_mixture import LogisticMixture

BUILTIN_HEADS = {h.name: h for h in (Categorical, Bernoulli, LogisticMixture, Gaussian, GaussianMixture)}

__all__ = ["BUILTIN_HEADS", "PMF_PRECISION", "Bernoulli", "Categorical", "Gaussian",
           "GaussianMixture", "Head", "HeadConfig", "LogisticMixture", "build_head", "head_spec"]
