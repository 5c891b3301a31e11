from hf_vitcl.adapters.l2p.config import L2P, L2PConfig, L2POptions
from hf_vitcl.adapters.l2p.layer import L2PLayer
from hf_vitcl.adapters.l2p.model import L2PModel

__all__ = ["L2P", "L2PConfig", "L2PLayer", "L2PModel", "L2POptions"]
