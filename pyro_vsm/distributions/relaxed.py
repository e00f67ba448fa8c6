r"""The binary Concrete (relaxed Bernoulli) distribution in logit space, as a Pyro distribution."""

import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions.relaxed_bernoulli import (
    LogitRelaxedBernoulli as _TorchLogitRelaxedBernoulli,
)
from torch.nn.functional import softplus

__all__ = ["LogitRelaxedBernoulli"]


class LogitRelaxedBernoulli(_TorchLogitRelaxedBernoulli, TorchDistributionMixin):
    r"""The logit of a relaxed Bernoulli (binary Concrete) variable, with a stable density.

    A draw is :math:`y = (\operatorname{logit} u + \ell)/\tau` with :math:`u \sim U(0, 1)`, logits
    :math:`\ell` and temperature :math:`\tau`; :math:`\operatorname{sigmoid}(y)` is the
    ``RelaxedBernoulli`` (Gumbel-softmax) sample, which tends to a Bernoulli draw with
    probability :math:`\operatorname{sigmoid}(\ell)` as :math:`\tau \to 0`. The log-density is

    .. math::

        \log p(y) = \log\tau + \ell - \tau y - 2\,\operatorname{softplus}(\ell - \tau y),

    computed with ``softplus`` (torch's ``log1p(exp(·))`` overflows for large arguments). Working
    in logit space keeps the KL term of a relaxed ELBO finite where the densities of
    ``sigmoid(y)`` underflow near 0 and 1 (Maddison et al., Appendix C); the KL divergence is the
    same in both spaces (it is invariant under the bijection).

    :param temperature: :math:`\tau > 0` (tensor or float).
    :param probs: probability of 1 (or ``logits``).
    :param logits: :math:`\ell`.

    References:

    [1] `The Concrete Distribution: A Continuous Relaxation of Discrete Random Variables`,
        Chris J. Maddison, Andriy Mnih, Yee Whye Teh (2017)

    [2] `Categorical Reparameterization with Gumbel-Softmax`,
        Eric Jang, Shixiang Gu, Ben Poole (2017)
    """

    has_rsample = True  # torch's class draws by rsample but does not declare it

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        diff = logits - value * self.temperature
        return self.temperature.log() + diff - 2 * softplus(diff)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LogitRelaxedBernoulli, _instance)
        return super().expand(batch_shape, _instance=new)
