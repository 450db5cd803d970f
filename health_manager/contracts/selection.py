"""Which contract a process speaks: chosen by the one config key `cc_protocol`."""

from health_manager.contracts.hm2.messages import Hm2Contract
from health_manager.contracts.hm9000.messages import Hm9000Contract


def contract_for(config):
    """The ICcContract `config.cc_protocol` names (HM 2.0's without one)."""
    hm9000 = config.hm9000
    if hm9000 is None:
        return Hm2Contract()
    return Hm9000Contract(hm9000.start_subject, hm9000.stop_subject)
