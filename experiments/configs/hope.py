"""Hope (self-modifying Titans + CMS). Usage: --config=experiments/configs/hope.py:tiny
(sizes: tiny, small, 340m, 760m, 1.3b). Table-6 ablations: --config.model.switches.dgd=False …"""
from hope_jax.config.experiments import experiment_config


def get_config(size: str = "tiny"):
    return experiment_config("hope", size)
